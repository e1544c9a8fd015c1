"""Soak of the job manager: many short jobs, four submitters and a saboteur, for a bounded time.

    .venv/bin/python bench/soak.py [--jobs 300] [--launchers 4] [--seconds 240] [--workspace DIR]

Four launcher processes submit ``--jobs`` short jobs between them (through ``JobManager.submit``,
as the CLI does): most report metrics and end, some spawn children (one ignoring SIGTERM) and
end normally, some fail, some hold one of two GPU slots so that jobs queue and the detached
scheduler runs. Meanwhile a chaos process SIGKILLs random runners (alone or with their group),
SIGKILLs the scheduler (aiming at the middle of a launch: a job picked but not yet started),
cancels random jobs and folds events.
After the launchers end, the queue is drained (bounded by ``--seconds`` in all).

Prints: jobs per status; events written (complete lines of every ``events.jsonl``) vs folded
(metric and resource rows in ``jobs.db``, and every byte offset at its file's end); jobs stuck
(not ended); errors seen (database errors and others, by process); processes left behind (any
process carrying this run's tag in its environment, i.e. a job, a child of one or a scheduler).
Targets: 0 lost or doubled events, 0 stuck, 0 database errors, 0 processes left.
A baseline of the same run: the time one job takes alone, launched and watched to its end.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from engine.stages import Stage

REPO = Path(__file__).resolve().parents[1]
TAG = "RSNA_TUI_SOAK_TAG"

STAGES = {
    "soak-short": Stage("soak-short", "Report five metrics", "soak:short", ()),
    "soak-spawn": Stage("soak-spawn", "Spawn two children and end", "soak:spawn", ()),
    "soak-fail": Stage("soak-fail", "Report two metrics and fail", "soak:fail", ()),
    "soak-gpu": Stage("soak-gpu", "Report five metrics holding a GPU slot", "soak:short", (), gpu=True),
}
MIX = [("soak-short", 0.55), ("soak-spawn", 0.15), ("soak-fail", 0.1), ("soak-gpu", 0.2)]


def short(params: dict, ctx: Any) -> None:
    for step in range(5):
        ctx.reporter.metric("loss", 1.0 / (step + 1), step)
        time.sleep(0.1)


def spawn(params: dict, ctx: Any) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    subprocess.Popen([sys.executable, "-c", stubborn])
    subprocess.Popen(["sleep", "600"])
    ctx.reporter.metric("loss", 1.0, 0)
    time.sleep(0.5)


def fail(params: dict, ctx: Any) -> None:
    ctx.reporter.metric("loss", 1.0, 0)
    ctx.reporter.metric("loss", 0.5, 1)
    raise RuntimeError("soak job asked to fail")


# -- roles -----------------------------------------------------------------------------------------

def _manager(root: Path) -> Any:
    from rsna_tui.jobs.manager import JobManager
    from rsna_tui.workspace import Workspace

    return JobManager(Workspace(root))


def _record(errors: Counter, exc: BaseException) -> None:
    import sqlite3 as _sqlite

    from rsna_tui.jobs.store import StoreError

    kind = "database" if isinstance(exc, (StoreError, _sqlite.Error)) else "other"
    errors[f"{kind}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"] += 1


def launcher(root: Path, count: int, seed: int, deadline: float) -> dict:
    rng = random.Random(seed)
    manager = _manager(root)
    errors: Counter = Counter()
    submitted = Counter()
    names, weights = zip(*MIX)
    for _ in range(count):
        if time.time() > deadline:
            break
        stage = rng.choices(names, weights)[0]
        try:
            manager.submit(stage)
            submitted[stage] += 1
        except Exception as exc:
            _record(errors, exc)
        time.sleep(rng.uniform(0.0, 0.4))
    manager.close()
    return {"submitted": dict(submitted), "errors": dict(errors)}


def chaos(root: Path, seed: int, until_file: Path, deadline: float, calm: bool = False) -> dict:
    from rsna_tui.jobs.local import process_matches

    rng = random.Random(seed)
    manager = _manager(root)
    errors: Counter = Counter()
    actions: Counter = Counter()
    killed: list[int] = []
    log = (root.parent / "chaos.log").open("a", buffering=1)
    while not until_file.exists() and time.time() < deadline:
        time.sleep(rng.uniform(0.05, 0.2))
        try:
            action = "fold" if calm else rng.choices(["kill", "kill-group", "kill-scheduler", "cancel", "fold"], [3, 2, 3, 2, 3])[0]
            active = [j for j in manager.store.active_jobs() if j.native_id]
            if action in ("kill", "kill-group") and active:
                job = rng.choice(active)
                pid = int(job.native_id)
                if process_matches(pid, job.proc_create_time):
                    (os.kill if action == "kill" else os.killpg)(pid, signal.SIGKILL)
                    actions[action] += 1
                    killed.append(job.id)
                    log.write(f"{time.time():.3f} {action} job {job.id} pid {pid}\n")
            elif action == "kill-scheduler":
                pid = _scheduler_pid(root)
                if pid:
                    launching = _wait_for_a_launch(manager, 1.0)  # aim at the middle of a launch
                    os.kill(pid, signal.SIGKILL)
                    actions[action + (" (during a launch)" if launching else "")] += 1
                    log.write(f"{time.time():.3f} {action} pid {pid} launching {launching}\n")
            elif action == "cancel" and active:
                job = rng.choice(active)
                log.write(f"{time.time():.3f} cancel job {job.id} pid {job.native_id}\n")
                manager.cancel(job.id, grace=0.5)
                actions[action] += 1
            elif action == "fold":
                manager.refresh()
                actions[action] += 1
        except ProcessLookupError:
            pass
        except Exception as exc:
            _record(errors, exc)
    manager.close()
    return {"actions": dict(actions), "errors": dict(errors), "killed": killed}


def _wait_for_a_launch(manager: Any, seconds: float) -> bool:
    """Poll until some job is picked for launch but has no process yet (True), or time is up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = manager.store.conn.execute("SELECT 1 FROM jobs WHERE status = 'starting' AND native_id IS NULL").fetchone()
        if row:
            return True
        time.sleep(0.005)
    return False


def _scheduler_pid(root: Path) -> int | None:
    import psutil

    try:
        pid = int((root / "scheduler.lock").read_text().split()[0])
        if "rsna_tui.jobs.scheduler" in " ".join(psutil.Process(pid).cmdline()):
            return pid
    except (OSError, ValueError, IndexError, psutil.Error):
        pass
    return None


# -- the run ---------------------------------------------------------------------------------------

def _env(tag: str, root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench"), env.get("PYTHONPATH", "")]),
        "RSNA_TUI_EXTRA_STAGES": "soak:STAGES", "RSNA_TUI_GPU_SLOTS": "2", "RSNA_TUI_MONITOR_INTERVAL": "0.2",
        "RSNA_TUI_CHILD_GRACE": "0.5", "RSNA_TUI_WORKSPACE": str(root), TAG: tag,
    })
    return env


def _role(role: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(Path(__file__)), "--role", role, *args], env=env, cwd=REPO / "bench",
                            stdout=subprocess.PIPE, text=True)


def baseline(root: Path, env: dict[str, str]) -> float:
    """Seconds one soak-short job takes alone, from submit to its fold as succeeded."""
    code = ("import time, sys; from soak import _manager; m = _manager(__import__('pathlib').Path(sys.argv[1])); "
            "t = time.perf_counter(); j = m.submit('soak-short')\n"
            "while not m.job(j.id).terminal: m.refresh(); time.sleep(0.02)\n"
            "print(time.perf_counter() - t, m.job(j.id).status)")
    out = subprocess.run([sys.executable, "-c", code, str(root)], env=env, cwd=REPO / "bench", capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[1] == "succeeded", out
    return float(out[0])


def drain(root: Path, deadline: float) -> Counter:
    """Refresh and schedule until every job ended (or the deadline): what a user's next commands do."""
    errors: Counter = Counter()
    manager = _manager(root)
    while time.time() < deadline:
        try:
            manager.refresh()
            if manager.schedule():
                manager.ensure_scheduler()
            if not manager.store.active_jobs():
                break
        except Exception as exc:
            _record(errors, exc)
        time.sleep(0.3)
    manager.close()
    return errors


def count_events(root: Path) -> dict[str, int]:
    """Complete metric / resource lines written, rows folded, and offsets short of their file's end."""
    written = Counter()
    conn = sqlite3.connect(root / "jobs.db")
    unfolded = 0
    for job_id, offset in conn.execute("SELECT id, events_offset FROM jobs"):
        path = root / "jobs" / str(job_id) / "events.jsonl"
        if not path.exists():
            continue
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        unfolded += offset != len(complete)
        for line in complete.splitlines():
            try:
                written[json.loads(line).get("type")] += 1
            except ValueError:
                written["bad"] += 1
    folded = {
        "metric": conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0],
        "resource": conn.execute("SELECT COUNT(*) FROM resource_samples").fetchone()[0],
    }
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    return {
        "metric_written": written["metric"], "metric_folded": folded["metric"],
        "resource_written": written["resource"], "resource_folded": folded["resource"],
        "all_events_written": sum(written.values()), "bad_lines": written["bad"],
        "offsets_not_at_end": unfolded, "integrity_ok": integrity == "ok",
    }


def leftovers(tag: str) -> list[str]:
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and proc.environ().get(TAG) == tag:
                out.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:100]}")
        except psutil.Error:
            continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--launchers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--role", choices=["launcher", "chaos"])
    parser.add_argument("--count", type=int)
    parser.add_argument("--deadline", type=float)
    parser.add_argument("--until", type=Path)
    parser.add_argument("--calm", action="store_true", help="The chaos process only folds (a baseline without sabotage)")
    args = parser.parse_args()
    if args.role == "launcher":
        print(json.dumps(launcher(args.workspace, args.count, args.seed, args.deadline)))
        return
    if args.role == "chaos":
        print(json.dumps(chaos(args.workspace, args.seed, args.until, args.deadline, args.calm)))
        return

    root = (args.workspace or Path(tempfile.mkdtemp(prefix="rsna-soak-"))) / "ws"
    tag = uuid.uuid4().hex
    env = _env(tag, root)
    start = time.time()
    deadline = start + args.seconds
    alone = baseline(root.parent / "baseline-ws", env)
    print(f"workspace {root}")
    print(f"baseline  one soak-short job alone, submit -> folded succeeded: {alone:.2f} s")
    until = root.parent / "launchers-done"
    per = [args.jobs // args.launchers + (i < args.jobs % args.launchers) for i in range(args.launchers)]
    launchers = [_role("launcher", env, "--workspace", str(root), "--count", str(n), "--seed", str(args.seed + i),
                       "--deadline", str(deadline)) for i, n in enumerate(per)]
    saboteur = _role("chaos", env, "--workspace", str(root), "--seed", str(args.seed - 1), "--until", str(until),
                     "--deadline", str(deadline), *(["--calm"] if args.calm else []))
    reports = [json.loads(p.communicate()[0] or "{}") for p in launchers]
    submitted_at = time.time()
    until.touch()
    sabotage = json.loads(saboteur.communicate()[0] or "{}")
    drain_errors = drain(root, deadline + 60)
    drained_at = time.time()
    time.sleep(1.0)  # the last scheduler exits once the queue is empty
    left = leftovers(tag)

    conn = sqlite3.connect(root / "jobs.db")
    statuses = dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status").fetchall())
    reasons = Counter(re.sub(r"\d+", "N", r[0].splitlines()[0])[:70] for r in conn.execute(
        "SELECT COALESCE(error, '') FROM jobs WHERE status IN ('lost', 'failed', 'cancelled')"))
    swept = conn.execute("SELECT COUNT(*) FROM jobs WHERE message LIKE '%processes of the job were still running%'").fetchone()[0]
    requeued = conn.execute("SELECT COUNT(*) FROM jobs WHERE message LIKE 'queued again:%'").fetchone()[0]
    lost_ids = {r[0] for r in conn.execute("SELECT id FROM jobs WHERE status = 'lost'")}
    conn.close()
    events = count_events(root)
    errors = Counter()
    for report in reports:
        errors.update(report.get("errors", {}))
    errors.update(sabotage.get("errors", {}))
    errors.update(drain_errors)
    submitted = sum(sum(r.get("submitted", {}).values()) for r in reports)
    stuck = sum(n for s, n in statuses.items() if s in ("queued", "starting", "running"))

    print(f"submitted {submitted} jobs from {args.launchers} processes in {submitted_at - start:.0f} s; "
          f"all ended {drained_at - submitted_at:.0f} s later")
    print(f"chaos     {json.dumps(sabotage.get('actions', {}), sort_keys=True)}")
    print(f"status    {json.dumps(statuses, sort_keys=True)}")
    for reason, n in reasons.most_common(8):
        print(f"          {n:4} x {reason or '(no error)'}")
    print(f"events    metric written {events['metric_written']} / folded {events['metric_folded']}; resource written "
          f"{events['resource_written']} / folded {events['resource_folded']}; {events['all_events_written']} events in "
          f"all, {events['bad_lines']} bad lines, offsets short of the end: {events['offsets_not_at_end']}; "
          f"integrity {'ok' if events['integrity_ok'] else 'FAILED'}")
    unexplained = sorted(lost_ids - set(sabotage.get("killed", [])))
    print(f"lost      {len(lost_ids)}, of which not killed by the chaos process: {len(unexplained)} {unexplained[:10]}")
    print(f"cleanup   {swept} ended jobs whose leftover processes the manager killed; {requeued} launches queued again")
    print(f"stuck     {stuck}")
    database_errors = sum(n for e, n in errors.items() if e.startswith("database"))
    print(f"errors    database {database_errors}, other {sum(errors.values()) - database_errors}")
    for error, n in errors.most_common(8):
        print(f"          {n:4} x {error}")
    print(f"left      {len(left)} processes" + "".join(f"\n          {p}" for p in left[:10]))
    doubled = events["metric_folded"] > events["metric_written"] or events["resource_folded"] > events["resource_written"]
    lost = events["metric_folded"] < events["metric_written"] or events["resource_folded"] < events["resource_written"]
    ok = not (doubled or lost or stuck or database_errors or left or events["offsets_not_at_end"]) and events["integrity_ok"]
    print("targets   " + ("met" if ok else "MISSED") + f" (lost events: {lost}, doubled: {doubled})")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
