"""Formats the admin API's JSON (read from stdin) for loadtest/demo.sh. Standard library only."""

from __future__ import annotations

import json
import sys


def started(r: dict) -> None:
    p = r["policy"]
    print(f"   steps {r['steps_percent']} %, analysis every {p['interval_secs']} s over {p['window_secs']} s, "
          f"rollback after {p['threshold']} failed intervals")


def events(all_events: list, seen: int) -> None:
    shown = [e for e in all_events if e["kind"].startswith("rollout") or e["kind"] in ("promoted", "rolled_back")]
    for e in shown[seen:]:
        w = e.get("weight_percent")
        weight = f"{w:g} %" if w is not None else "-"
        print(f"   {e['at'][11:19]}  {e['kind']:<26} canary {weight:>6}  {e['message']}")
    print(len(shown))


def checks(r: dict) -> None:
    for c in (r.get("last_analysis") or {}).get("checks", []):
        v = c["value"]
        value = f"{v:.3f}" if v is not None else "-"
        print(f"   {c['check']:<20} {c['status']:<8} value {value:>9}  threshold {c['threshold']:g}  ({c['detail']})")


def main() -> None:
    what = sys.argv[1]
    data = json.load(sys.stdin)
    if what == "started":
        started(data)
    elif what == "events":
        events(data, int(sys.argv[2]))
    elif what == "checks":
        checks(data)
    elif what == "field":
        print(data[sys.argv[2]])
    else:
        raise SystemExit(f"unknown view {what}")


if __name__ == "__main__":
    main()
