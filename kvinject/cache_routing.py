"""Wrapped around lm-eval's ``CachingLM`` by the start-up hook (kvinject/_autoload.py): ``--use_cache``
with ``--model kvinject`` is served by kvinject's result store, never by lm-eval's request-text cache."""
import logging
import re

logger = logging.getLogger(__name__)


def result_store_path_for_cache(cache_db: str) -> str:
    """``--use_cache PATH`` -> ``PATH.kvinject.sqlite``, one file for all ranks (lm-eval names its
    cache ``PATH_rank<N>.db``), so a run can resume with another number of processes."""
    return re.sub(r"_rank\d+\.db$", "", cache_db) + ".kvinject.sqlite"


def route_cache_to_result_store(caching_class):
    """lm-eval's CachingLM keys a response by the request text alone, not by the model, its args or
    the doc (upstream issues #2715, #4063), so it would serve a trace computed under other injection
    settings. For kvinject it becomes a pass-through and the adapter's own result store, keyed by
    everything that changes a trace, does the caching at the path --use_cache names."""
    original_init, original_getattr = caching_class.__init__, caching_class.__getattr__

    def __init__(self, lm, cache_db):
        if not hasattr(lm, "open_result_store"):  # another model: lm-eval's own cache
            return original_init(self, lm, cache_db)
        self.lm, self.cache_db, self.dbdict = lm, cache_db, None
        store = lm.open_result_store(result_store_path_for_cache(cache_db))
        logger.warning("kvinject: --use_cache reuses per-doc results from the result store %s", store.path)

    def __getattr__(self, attr):
        lm = self.__dict__.get("lm")
        if hasattr(lm, "open_result_store"):
            return getattr(lm, attr)
        return original_getattr(self, attr)

    caching_class.__init__, caching_class.__getattr__ = __init__, __getattr__
