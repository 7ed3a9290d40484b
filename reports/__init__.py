"""Reports over finished lm-eval runs: leaderboards, adaptation curves and per-problem JSON.

Pure functions over what a run left on disk (``results_<date>.json`` and the ``traces_<date>.jsonl*``
written beside it); nothing here imports torch or touches a model. See reports/README.md for every
rule, and ``kvinject report`` (kvinject/commands/report.py) for the command.

    runs.find_runs(folders) -> [Run]                    results JSON + traces of each run
    leaderboard.build_leaderboard(runs, ...) -> Leaderboard   .markdown() .latex() .csv()
    curves.task_curves(runs, task, ...) -> {CurveKey: {series: Band}}
    plotting.draw_curves(curves, title, stem) -> [png, svg]
    per_problem.problem_reports(run, task, ...) -> [dict]  the original study's per-problem format
    html_page.render_page(page_data(...)) -> str        index.html: one offline page (html_page.html)
"""
