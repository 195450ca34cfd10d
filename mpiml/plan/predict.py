"""``predict(job, layout, cluster)``: seconds per step, total seconds, memory per rank, core-hours."""

from __future__ import annotations

from mpiml.plan.calibration import Calibration, load_calibration
from mpiml.plan.compute import oversubscription, step_seconds, steps
from mpiml.plan.memory import memory_per_rank
from mpiml.plan.spec import Cluster, Job, Layout, Prediction


def predict(job: Job, layout: Layout, cluster: Cluster, calibration: Calibration | None = None) -> Prediction:
    """Predict one job's time and memory on one layout.

    Parameters
    ----------
    job : Job
        What is trained (sizes of the training data).
    layout : Layout
        Nodes, ranks per node, threads per rank and the data/model/hybrid split.
    cluster : Cluster
        Cores and memory per node; its ``tuning`` file is read when ``calibration`` is None.
    calibration : Calibration, optional
        Measured constants (:func:`mpiml.plan.load_calibration`); default: ``cluster.tuning``'s,
        else the built-in defaults.

    Returns
    -------
    Prediction
        Pure function of its arguments (the tuning file aside); no MPI, no I/O beyond it.
    """
    if calibration is None:
        calibration = load_calibration(cluster.tuning) if cluster.tuning else Calibration()
    seconds = step_seconds(job, layout, cluster, calibration)
    memory = memory_per_rank(job, layout, calibration)
    total = seconds["total"] * steps(job)
    cores = layout.ranks * layout.threads_per_rank
    notes = []
    over = oversubscription(layout, cluster)
    if over > 1.0:
        notes.append(f"oversubscribed: {layout.ranks_per_node * layout.threads_per_rank} ranks x threads on "
                     f"{cluster.cores_per_node} cores per node ({over:.1f}x): compute and communication wait "
                     f"for a core")
    per_node = memory["total"] * layout.ranks_per_node
    if per_node > cluster.mem_per_node_bytes:
        notes.append(f"memory: {layout.ranks_per_node} ranks x {memory['total'] / 2**30:.2f} GiB exceed the "
                     f"node's {cluster.mem_per_node_bytes / 2**30:.1f} GiB")
    if job.kind == "sgd" and job.algorithm == "lbfgs":
        notes.append(f"lbfgs: total assumes all {job.max_iter} iterations (it may converge sooner)")
    return Prediction(seconds_per_step=seconds["total"], step=seconds["step"], seconds_total=total,
                      comm_seconds_per_step=seconds["comm"], memory_bytes_per_rank=int(memory["total"]),
                      core_hours=total * cores / 3600.0, notes=notes,
                      detail={"compute_seconds_per_step": seconds["compute"], "oversubscription": over,
                              "memory": memory, "steps": steps(job), "calibration": calibration.source})
