"""Where kvinject keeps files it can rebuild: converted models, built datasets, trace spools."""
import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$KVINJECT_CACHE``, else ``$XDG_CACHE_HOME/kvinject``, else ``~/.cache/kvinject``."""
    if os.environ.get("KVINJECT_CACHE"):
        return Path(os.environ["KVINJECT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kvinject"
