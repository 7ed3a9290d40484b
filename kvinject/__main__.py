"""``python -m kvinject ...`` / ``kvinject-lm-eval ...``: lm-eval's CLI with the plugin installed.

For interpreters started without site hooks (``python -S``) or with ``KVINJECT_LMEVAL_DISABLE`` set,
where the ``.pth`` start-up hook does not run. Arguments are lm-eval's own.
"""
from kvinject import _autoload


def main():
    """Run lm-eval's CLI on sys.argv with the kvinject plugin installed."""
    _autoload.install(force=True)
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
