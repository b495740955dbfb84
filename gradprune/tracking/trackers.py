"""The ``loggers`` plugin family: each plugin opens one of Lightning's loggers (MLflow, TensorBoard,
Weights & Biases, CSV) for a run, stores files with it, and groups a search's trials.

How a search's trials are grouped, per tracker:

* ``mlflow``: a parent run named after the search, every trial a nested run (tag ``mlflow.parentRunId``);
  the analysis' files become artifacts of the parent run;
* ``wandb``: a W&B group named after the search (W&B has no parent runs); the analysis is one more run of
  the group, ``job_type: analysis``, holding its files;
* ``tensorboard``, ``csv``: one folder per search (``<save_dir>/<search>/``), a version per trial
  (``trial_<n>``); the analysis' files (TensorBoard: the report as text, the figures as images) go to
  version ``analysis``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator

EXTRA = "pip install 'gradprune[tracking]'"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _package: ClassVar[str] = ""  # the Python package the logger needs

    @model_validator(mode="after")
    def _installed(self):
        if self._package and importlib.util.find_spec(self._package) is None:
            raise ValueError(f"this logger needs the Python package {self._package!r}, which is not installed "
                             f"({EXTRA})")
        return self


class Tracker:
    """One tracker. ``open`` returns a Lightning logger for a run; ``group`` (from :meth:`start_group`)
    places the run under a search."""

    Params: type[BaseModel] = _Params
    name = ""

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    def open(self, run_name: str, out_dir: Path, group: dict[str, Any] | None = None):
        """A Lightning logger for one run (``out_dir``: the run's output folder, for default save dirs)."""
        raise NotImplementedError

    def log_files(self, logger, paths: list[Path]) -> None:
        """Store files with the run (artifacts, saved files, or copies in the logger's folder)."""
        folder = Path(logger.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for p in paths:
            _copy(p, folder / p.name)

    def close(self, logger, status: str = "success") -> None:
        """End the run (``success`` or ``failed``)."""
        logger.finalize(status)

    def start_group(self, search: str, out_dir: Path) -> dict[str, Any]:
        """What groups a search's runs (JSON-able; kept in the search's tracking.json)."""
        return {"search": search}

    def attach(self, group: dict[str, Any], paths: list[Path], out_dir: Path) -> str:
        """Store an analysis' files with the search's group; returns where they went."""
        logger = self.open("analysis", out_dir, {**group, "analysis": True})
        self.log_files(logger, paths)
        self.close(logger)
        return str(Path(logger.log_dir))


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def _quiet(*names: str) -> None:
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)


class MLflowTracker(Tracker):
    """MLflow (any tracking URI: ``sqlite:///path.db``, a folder, a server); a search is a parent run."""

    class Params(_Params):
        _package: ClassVar[str] = "mlflow"
        tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else ./mlruns
        experiment_name: str = "gradprune"
        run_name: str | None = None
        tags: dict[str, str] = {}
        artifact_location: str | None = None

    def _env(self) -> None:
        # a server that is down must fail in seconds, not after MLflow's minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # "Creating initial MLflow database tables…"
        import mlflow  # noqa: F401 - configures its loggers on import; quieted after that

        _quiet("mlflow", "alembic", "lightning.pytorch.loggers.mlflow")

    def open(self, run_name: str, out_dir: Path, group: dict[str, Any] | None = None):
        """A ``lightning.pytorch.loggers.MLFlowLogger``; under a search, a nested run of its parent."""
        self._env()
        from lightning.pytorch.loggers import MLFlowLogger

        p = self.params
        tags = dict(p.tags)
        if group:
            tags.update({"mlflow.parentRunId": group["run_id"], "gradprune.search": group["search"]})
            if group.get("analysis"):  # the analysis goes to the parent run itself
                logger = MLFlowLogger(experiment_name=p.experiment_name, tracking_uri=p.tracking_uri,
                                      run_id=group["run_id"])
                return logger
        return MLFlowLogger(experiment_name=p.experiment_name, run_name=p.run_name or run_name,
                            tracking_uri=p.tracking_uri, tags=tags, artifact_location=p.artifact_location)

    def log_files(self, logger, paths: list[Path]) -> None:
        """Artifacts of the run (a folder keeps its name as the artifact path)."""
        for path in paths:
            if path.is_dir():
                logger.experiment.log_artifacts(logger.run_id, str(path), artifact_path=path.name)
            else:
                logger.experiment.log_artifact(logger.run_id, str(path))

    def start_group(self, search: str, out_dir: Path) -> dict[str, Any]:
        """A parent run named after the search."""
        logger = self.open(f"search {search}", out_dir)
        logger.experiment.set_tag(logger.run_id, "gradprune.search", search)
        logger.finalize("success")
        return {"search": search, "run_id": logger.run_id, "experiment_id": logger.experiment_id}

    def attach(self, group: dict[str, Any], paths: list[Path], out_dir: Path) -> str:
        """Artifacts of the search's parent run."""
        logger = self.open("analysis", out_dir, {**group, "analysis": True})
        self.log_files(logger, paths)
        return f"MLflow run {group['run_id']}"


class TensorBoardTracker(Tracker):
    """TensorBoard event files (``<save_dir>/<name>/<version>/``); a search is a folder of versions."""

    class Params(_Params):
        _package: ClassVar[str] = "tensorboard"
        save_dir: str | None = None  # default: <output dir>/tensorboard
        name: str = "gradprune"

    def open(self, run_name: str, out_dir: Path, group: dict[str, Any] | None = None):
        """A ``lightning.pytorch.loggers.TensorBoardLogger``."""
        from lightning.pytorch.loggers import TensorBoardLogger

        p = self.params
        if group:
            return TensorBoardLogger(group["save_dir"], name=group["search"], version=run_name,
                                     default_hp_metric=False)
        return TensorBoardLogger(p.save_dir or str(out_dir / "tensorboard"), name=p.name, version=run_name,
                                 default_hp_metric=False)

    def log_files(self, logger, paths: list[Path]) -> None:
        """Text files as text summaries (CSV as a Markdown table), PNGs as images, the rest listed by path."""
        writer = logger.experiment
        for path in paths:
            if path.suffix == ".png":
                from matplotlib.image import imread

                writer.add_image(path.stem, imread(str(path))[..., :3], dataformats="HWC")
            elif path.suffix == ".csv":
                lines = path.read_text(encoding="utf-8").splitlines()
                rows = [" | ".join(line.split(",")) for line in lines]
                table = "\n".join([rows[0], " | ".join("---" for _ in lines[0].split(",")), *rows[1:]]) if rows else ""
                writer.add_text(path.name, table)
            elif path.suffix in (".md", ".txt", ".json"):
                writer.add_text(path.name, path.read_text(encoding="utf-8")[:200_000])
            else:
                writer.add_text(path.name, f"stored beside the run: {path}")
        writer.flush()

    def start_group(self, search: str, out_dir: Path) -> dict[str, Any]:
        """The search's folder of versions."""
        return {"search": search, "save_dir": self.params.save_dir or str(out_dir / "tensorboard")}


class WandbTracker(Tracker):
    """Weights & Biases (``mode: offline`` or ``WANDB_MODE=offline`` writes run files to sync later); a
    search is a W&B group."""

    class Params(_Params):
        _package: ClassVar[str] = "wandb"
        project: str = "gradprune"
        entity: str | None = None
        name: str | None = None
        tags: list[str] = []
        mode: Literal["online", "offline", "disabled"] | None = None  # None: WANDB_MODE, else wandb's default
        save_dir: str | None = None  # default: the run's output folder

    def open(self, run_name: str, out_dir: Path, group: dict[str, Any] | None = None):
        """A ``lightning.pytorch.loggers.WandbLogger``."""
        from lightning.pytorch.loggers import WandbLogger

        p = self.params
        save_dir = (group or {}).get("save_dir") or p.save_dir or str(out_dir)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {"mode": p.mode} if p.mode else {}
        if group:
            extra.update(group=group["search"], job_type="analysis" if group.get("analysis") else "trial")
        return WandbLogger(name=p.name or run_name, project=p.project, entity=p.entity, save_dir=save_dir,
                           tags=list(p.tags) or None, reinit="finish_previous", **extra)

    def log_files(self, logger, paths: list[Path]) -> None:
        """Files of the run (W&B's ``save``, which works offline too)."""
        run = logger.experiment
        for path in paths:
            for f in (sorted(x for x in path.rglob("*") if x.is_file()) if path.is_dir() else [path]):
                run.save(str(f), base_path=str(path.parent), policy="now")

    def close(self, logger, status: str = "success") -> None:
        """Finish the W&B run (Lightning's finalize leaves it open), so its files are complete."""
        logger.finalize(status)
        logger.experiment.finish(exit_code=0 if status == "success" else 1)

    def start_group(self, search: str, out_dir: Path) -> dict[str, Any]:
        """The W&B group of the search's runs."""
        return {"search": search, "save_dir": self.params.save_dir or str(out_dir)}

    def attach(self, group: dict[str, Any], paths: list[Path], out_dir: Path) -> str:
        """One more run of the group (``job_type: analysis``) holding the files."""
        logger = self.open("analysis", out_dir, {**group, "analysis": True})
        self.log_files(logger, paths)
        self.close(logger)
        return f"W&B group {group['search']}"


class CSVTracker(Tracker):
    """Lightning's CSV logger (``metrics.csv`` and ``hparams.yaml`` per version); files are copied beside."""

    class Params(_Params):
        save_dir: str | None = None  # default: <output dir>/csv_logs
        name: str = "gradprune"

    def open(self, run_name: str, out_dir: Path, group: dict[str, Any] | None = None):
        """A ``lightning.pytorch.loggers.CSVLogger``."""
        from lightning.pytorch.loggers import CSVLogger

        if group:
            return CSVLogger(group["save_dir"], name=group["search"], version=run_name)
        return CSVLogger(self.params.save_dir or str(out_dir / "csv_logs"), name=self.params.name, version=run_name)

    def start_group(self, search: str, out_dir: Path) -> dict[str, Any]:
        """The search's folder of versions."""
        return {"search": search, "save_dir": self.params.save_dir or str(out_dir / "csv_logs")}
