"""MLflow: one MLflow run per dmlkit run, found again by its ``dmlkit.run_dir`` tag.

Default store: ``sqlite:///<run.root>/mlflow.db`` with artifacts in ``<run.root>/mlartifacts``
(MLflow's own local database store; no server). ``run.tracking_uri`` points it elsewhere (an
MLflow server: ``http://host:5000``). With ``run.group`` the run is a child of the parent run
of that name (a benchmark: one parent per method's study).
"""

from __future__ import annotations

import time
from pathlib import Path

from dmlkit.engine.tracking.logger import Logger, require

RUN_DIR_TAG = "dmlkit.run_dir"
GROUP_TAG = "dmlkit.group"
PARENT_TAG = "mlflow.parentRunId"
MAX_BATCH = 100  # params per log_batch request (MLflow's limit)
SQLITE = "sqlite:///"


def default_uri(root: Path) -> str:
    return f"{SQLITE}{root.resolve() / 'mlflow.db'}"


class MlflowLogger(Logger):
    """Metrics with ``log_batch`` (one request per epoch: all of an epoch or none of it)."""

    def __init__(self, run_dir: Path, root: Path, uri: str | None, experiment: str,
                 group: str | None) -> None:
        super().__init__()
        require("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        uri = uri or default_uri(root)
        self.client = client = MlflowClient(uri)
        self.experiment = self._experiment(experiment, uri)
        key = str(run_dir.resolve())
        existing = self._find(RUN_DIR_TAG, key)
        if existing is None:
            tags = {RUN_DIR_TAG: key}
            if group is not None:
                tags[PARENT_TAG] = self._parent(group)
            self.run_id = client.create_run(self.experiment, tags=tags,
                                            run_name=run_dir.name).info.run_id
        else:
            self.run_id = existing
            client.update_run(existing, status="RUNNING")
            for name in client.get_run(existing).data.metrics:
                self.logged |= {(name, m.step) for m in client.get_metric_history(existing, name)}

    def _experiment(self, name: str, uri: str) -> str:
        """The id of experiment ``name``, created if missing (by this or a parallel worker)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        local = uri.startswith(SQLITE)  # artifacts beside the database, not in the cwd
        where = (Path(uri[len(SQLITE):]).parent / "mlartifacts").as_uri() if local else None
        try:
            return self.client.create_experiment(name, artifact_location=where)
        except MlflowException:  # created meanwhile by another process
            return self.client.get_experiment_by_name(name).experiment_id

    def _find(self, tag: str, value: str) -> str | None:
        quoted = value.replace("'", "\\'")
        runs = self.client.search_runs([self.experiment], f"tags.`{tag}` = '{quoted}'",
                                       max_results=1, order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    def _parent(self, group: str) -> str:
        """The parent run of ``group``: found by its tag, else created (and left running)."""
        found = self._find(GROUP_TAG, group)
        if found is not None:
            return found
        return self.client.create_run(self.experiment, tags={GROUP_TAG: group},
                                      run_name=group).info.run_id

    def write(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step)
                                                    for k, v in values.items()])

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        present = self.client.get_run(self.run_id).data.params  # immutable once logged
        items = [Param(k, v) for k, v in params.items() if k not in present]
        for i in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + MAX_BATCH])

    def log_files(self, files: list[Path]) -> None:
        present = {f.path for f in self.client.list_artifacts(self.run_id)}
        for f in files:
            if f.name not in present:
                self.client.log_artifact(self.run_id, str(f))

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")
