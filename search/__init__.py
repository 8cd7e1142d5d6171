"""The search loop, the store, the fronts and the CLI."""

from .config import RunConfig, load_config
from .errors import UserError
from .fronts import Front, Point, hypervolume, non_dominated
from .runs import fronts, list_runs, resume_run, start_run
from .store import Store

__all__ = ["Front", "Point", "RunConfig", "Store", "UserError", "fronts", "hypervolume", "list_runs",
           "load_config", "non_dominated", "resume_run", "start_run"]
