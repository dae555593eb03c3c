"""A stock openleadr VEN as a product might ship it: ``OpenADRClient`` with an event handler that opts in, reading
the wall clock, with no option for a simulated clock and no knowledge of the conformance suite.

Run as ``python stock_openleadr_ven.py VTN_URL VEN_NAME``. The suite's ``--clock faketime`` runs it at speed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from openleadr import OpenADRClient


async def main(vtn_url: str, ven_name: str) -> None:
    client = OpenADRClient(ven_name=ven_name, vtn_url=vtn_url)

    async def on_event(event: dict[str, Any]) -> str:
        return "optIn"

    client.add_handler("on_event", on_event)
    client.add_handler("on_update_event", on_event)
    await client.run()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
