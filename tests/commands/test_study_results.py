"""The committed offline study regenerates: its leaderboard, comparisons and findings tables come back
equal from the committed results JSON and samples (`kvinject study <file> --results_only`)."""
from pathlib import Path

import pytest

from kvinject import cli
from kvinject.commands.study import finished_record, write_results
from kvinject.study import load_study

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ROOT / "configs" / "study" / "offline-cpu.yaml"


@pytest.fixture
def study(monkeypatch):
    monkeypatch.chdir(ROOT)   # the study file's paths are relative to the repository root
    return load_study(OFFLINE)


def _generated(folder: Path) -> list[Path]:
    """The files --results_only writes that the test compares (curves need traces, which are not committed)."""
    names = ["findings.md", *(p.relative_to(folder) for p in (folder / "comparisons").glob("*.*"))]
    names += [p.relative_to(folder) for p in (folder / "report").rglob("leaderboard*.*")]
    return sorted(Path(name) for name in names)


def test_committed_results_regenerate_from_the_committed_runs(study, tmp_path):
    finished = [r for r in study.runs if finished_record(study, r) is not None]
    assert finished, "no committed study run"
    assert write_results(study, tmp_path) == 0
    committed = _generated(study.output_path)
    assert committed == _generated(tmp_path) and Path("findings.md") in committed
    assert any(name.parts[0] == "comparisons" for name in committed)
    for name in committed:
        assert (tmp_path / name).read_text(encoding="utf-8") == (study.output_path / name).read_text(encoding="utf-8"), name


def test_every_finished_run_is_in_the_findings_and_every_cited_comparison_is_committed(study):
    findings = (study.output_path / "findings.md").read_text(encoding="utf-8")
    finished = {r.name for r in study.runs if finished_record(study, r) is not None}
    for name in finished:
        assert f"| {name} | " in findings
    for comparison in study.comparisons:
        written = (study.output_path / "comparisons" / f"{comparison.name}.md").is_file()
        assert written == (set(comparison.runs) <= finished), comparison.name


def test_results_only_without_a_finished_run_says_so(tmp_path, capsys):
    study_file = tmp_path / "study.yaml"
    study_file.write_text(f"output_path: {tmp_path / 'out'}\nruns:\n  - name: m\n    model_args: {{pretrained: x}}\n"
                          "    tasks: [adaptation_update]\n", encoding="utf-8")
    assert cli.main(["study", str(study_file), "--results_only"]) == 2
    assert "no run has finished yet" in capsys.readouterr().err


def _committed_numbers(study) -> str:
    """The committed tables' text and every number of the committed results JSON, rounded as quoted."""
    import json
    import re

    folder = study.output_path
    texts = [path.read_text(encoding="utf-8") for path in _generated_paths(folder)]
    for path in folder.glob("runs/*/*/results_*.json"):
        for task in json.loads(path.read_text(encoding="utf-8"))["results"].values():
            for value in task.values():
                if isinstance(value, float):
                    texts.append(f"{value:.3f} {value:.4f} {value:.1e}")
    return re.sub(r"\s+", " ", " ".join(texts))


def _generated_paths(folder: Path) -> list[Path]:
    return [folder / name for name in _generated(folder)]


def _readme_results() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Results: the offline study")
    return readme[start:readme.index("\n---\n", start)]


@pytest.mark.parametrize("document", ["docs/results.md", "README.md"])
def test_every_number_in_the_findings_is_in_a_committed_file(study, document):
    """docs/results.md and the README's results section quote numbers (3 or 4 decimals, or 1.2e-06)
    only from the committed files."""
    import re

    text = (ROOT / document).read_text(encoding="utf-8") if document != "README.md" else _readme_results()
    committed = _committed_numbers(study)
    quoted = set(re.findall(r"-?\d+\.\d{3,4}\b|\d\.\de-\d\d", text))
    assert len(quoted) > 10
    missing = sorted(number for number in quoted if number not in committed and number.lstrip("-") not in committed)
    assert not missing, f"numbers in docs/results.md that no committed file holds: {missing}"
