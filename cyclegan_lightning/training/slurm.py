"""The SLURM job this process runs in, as the requeue path needs it: its id, whether it was requeued, and
``scontrol requeue``.

SLURM sends a signal ahead of the time limit when the job asks for one (``sbatch --signal=USR1@120``; submitit
asks for ``USR2`` unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise). What the run does with it is
``callbacks.CheckpointOnSignal``; this module only talks to SLURM.
"""

from __future__ import annotations

import logging
import os
import subprocess

log = logging.getLogger(__name__)

SCONTROL_TIMEOUT_S = 60  # scontrol normally answers in well under a second; never hang the pre-emption window


def job_id() -> str | None:
    """The id ``scontrol`` knows this job by, or None outside SLURM. An array task is ``<array job>_<task>``, as
    Lightning's own SLURM handler names it (submitit's launcher submits every sweep as an array)."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def restart_count() -> int:
    """How many times SLURM has requeued or restarted this job (``SLURM_RESTART_COUNT``; 0 on the first run)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def requeue(job: str) -> bool:
    """``scontrol requeue <job>``: SLURM ends this job and queues it again under the same id. Logs what happened;
    a missing or failing ``scontrol`` is logged, never raised (the checkpoint is saved already)."""
    command = ["scontrol", "requeue", job]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("could not requeue SLURM job %s (%s); resubmit it with ckpt_path=auto", job, exc)
        return False
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        log.error("scontrol requeue %s failed (%s); resubmit the job with ckpt_path=auto", job, reason)
        return False
    log.warning("requeued SLURM job %s: it continues from the saved checkpoint when it restarts", job)
    return True
