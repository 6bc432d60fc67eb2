"""Child side of pipeline.ingest.isolated: reads one JSON request per line, answers one JSON line per request."""

from __future__ import annotations

import json
import os
import sys
import traceback


def _operations():
    from pipeline.ingest import probe, scenes

    return {"probe": probe.analyze, "scenes": scenes.detect_scenes}


def main() -> None:
    # Keep the protocol on a private descriptor: native libraries that print to stdout must not corrupt it.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    ops = _operations()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = ops[request["op"]](**request["kwargs"])
            reply = {"ok": True, "result": result}
        except Exception as e:
            reason = getattr(e, "reason", None)
            if reason is None:
                from schemas import reasons

                reason = reasons.UNREADABLE
                message = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            else:
                message = getattr(e, "message", str(e))
            reply = {"ok": False, "reason": reason, "message": message}
        protocol.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
