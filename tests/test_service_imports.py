"""The services the tests start import what the image's do: no command-line UI comes with them.

With `rich` installed (mutmut brings it, through textual), httpx imports its own command line (`httpx._main`:
click, rich, pygments; about 75 ms) in every service, and the suite starts some 370 of them. mutmut is therefore in
the `mutate` dependency group, which only `make mutate` installs.
"""

import subprocess
import sys

SERVICE_ENTRY_POINTS = [
    "kubemta_ingress.__main__",
    "kubemta_queue_manager.__main__",
    "kubemta_dns_resolver.__main__",
    "kubemta_delivery_worker.__main__",
    "kubemta_tracker.__main__",
    "kubemta_webhooks.__main__",
    "kubemta_admin.__main__",
]
UI_MODULES = ("httpx._main", "rich", "textual")


def test_starting_a_service_imports_no_command_line_ui() -> None:
    program = (
        f"import sys\nfor name in {SERVICE_ENTRY_POINTS!r}:\n    __import__(name)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({UI_MODULES!r})))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert imported.strip() == "[]"
