"""The search loop, the store, the fronts and the CLI."""

from .api import Run
from .compare import Comparison, compare_runs
from .config import RunConfig, load_config
from .errors import UserError
from .export import export_candidate, load_model
from .fronts import Front, Point, hypervolume, non_dominated
from .recover import recover_front
from .report import write_comparison, write_report
from .runs import fronts, list_runs, resume_run, start_run
from .store import Store

__all__ = ["Comparison", "Front", "Point", "Run", "RunConfig", "Store", "UserError", "compare_runs",
           "export_candidate", "fronts", "hypervolume", "list_runs", "load_config", "load_model", "non_dominated",
           "recover_front", "resume_run", "start_run", "write_comparison", "write_report"]
