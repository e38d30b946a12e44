"""``nborch pool``: set, list and remove the pools that cap how many tasks of every run on
a store run at once (``pool: NAME`` on a task)."""

from __future__ import annotations

import json

from ..core.errors import NborchError, SpecError
from ..core.pools import pool_name_problem, slots_problem
from .cli_common import EXIT_OK, open_store


def _checked_name(name: str) -> str:
    if (problem := pool_name_problem(name)) is not None:
        raise SpecError(problem)
    return name


def cmd_pool_set(args) -> int:
    name = _checked_name(args.name)
    if (problem := slots_problem(args.slots)) is not None:
        raise SpecError(f"--slots: {problem}")
    before = open_store(args).set_pool(name, args.slots)
    slots = f"{args.slots} slot{'s' if args.slots != 1 else ''}"
    if before is None:
        print(f"created pool {name} with {slots}")
    else:
        print(f"pool {name}: {slots} (was {before})")
    return EXIT_OK


def cmd_pool_list(args) -> int:
    pools = open_store(args, readonly=True).pools()
    if args.json:
        print(json.dumps([{"name": p["name"], "slots": p["slots"], "used": len(p["running"]),
                           "queued": p["queued"], "running": p["running"]} for p in pools],
                         indent=2))
    elif not pools:
        print("no pools (create one with `nborch pool set NAME --slots N`)")
    else:
        width = max(4, *(len(p["name"]) for p in pools))
        print(f"{'POOL':<{width}}  SLOTS  USED  QUEUED")
        for p in pools:
            print(f"{p['name']:<{width}}  {p['slots']:>5}  {len(p['running']):>4}  "
                  f"{p['queued']:>6}")
    return EXIT_OK


def cmd_pool_remove(args) -> int:
    """A pool some live run still needs is not removed: its waiting tasks would wait for a
    pool nobody can see. Once those runs end (or are cancelled) it can go."""
    name = _checked_name(args.name)
    store = open_store(args)
    if name not in store.pool_names():
        known = ", ".join(sorted(store.pool_names())) or "none"
        raise SpecError(f"no pool {name!r} in the run store {store.path} (pools: {known})")
    users = store.pool_users(name)
    if users:
        raise NborchError(
            f"pool {name!r} is in use: run(s) {', '.join(users)} have tasks in it that have not "
            "ended; remove it once they end, or cancel them first (`nborch cancel RUN_ID`)")
    store.remove_pool(name)
    print(f"removed pool {name}")
    return EXIT_OK


def add_parsers(sub) -> None:
    p = sub.add_parser("pool", help="set, list or remove pools: caps on the tasks (with "
                                    "'pool: NAME') that all runs on this store run at once")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("set", help="create a pool, or change its number of slots")
    a.add_argument("name", help="the pool's name: letters, digits, '_', '.', '-'")
    a.add_argument("--slots", type=int, required=True, metavar="N",
                   help="how many of its tasks may run at once, across every run (>= 1)")
    a.set_defaults(func=cmd_pool_set)
    a = actions.add_parser("list", help="pools with their slots, the slots in use and the "
                                        "tasks waiting for one")
    a.add_argument("--json", action="store_true", help="print the pools as JSON")
    a.set_defaults(func=cmd_pool_list)
    a = actions.add_parser("remove", help="remove a pool (refused while a running run has "
                                          "tasks in it that have not ended)")
    a.add_argument("name")
    a.set_defaults(func=cmd_pool_remove)
