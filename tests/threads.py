"""Calls run at once from threads, each with its own database connection (PostgreSQL runs them concurrently)."""

import threading

from django.db import connections


def at_once(*calls):
    """Run the calls in threads released together; each one's result or exception, in order."""
    results = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index, call):
        start.wait()
        results[index] = _outcome(call)

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def in_thread(call, outcome: dict, key: str) -> threading.Thread:
    """Start ``call`` in a thread of its own (its own connection); its result or exception goes to
    ``outcome[key]``. For a test that holds a lock meanwhile and then joins it."""
    def run():
        outcome[key] = _outcome(call)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _outcome(call):
    """``call``'s result or exception, in a thread of its own whose connection is closed after it."""
    try:
        return call()
    except Exception as exc:   # noqa: BLE001 - the test judges every outcome
        return exc
    finally:
        connections.close_all()
