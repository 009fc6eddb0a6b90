"""gc_tuning.freeze_startup: startup's garbage is collected first (never frozen), every object alive then is
exempt from later collections, and cycles made afterwards are still collected. Each case runs in a fresh
interpreter: freezing the test process itself would exempt pytest's objects for the rest of the run."""

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import gc, weakref
    from kubemta_common.gc_tuning import freeze_startup

    class Node:
        pass

    gc.disable()  # only the explicit collections below run
    startup_garbage = Node()
    startup_garbage.itself = startup_garbage
    garbage_ref = weakref.ref(startup_garbage)
    del startup_garbage
    kept = Node()
    kept.itself = kept

    frozen = freeze_startup()
    assert frozen == gc.get_freeze_count() > 1000, frozen
    assert garbage_ref() is None, "startup's garbage was frozen instead of collected"
    assert all(kept is not obj for obj in gc.get_objects()), "a startup object is still scanned by collections"

    later = Node()
    later.itself = later
    later_ref = weakref.ref(later)
    del later
    gc.collect()
    assert later_ref() is None, "a cycle made after the freeze was not collected"
    print("ok", frozen)
    """
)


def test_freeze_startup_collects_startup_garbage_exempts_the_rest_and_later_cycles_still_go() -> None:
    result = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok "), result.stdout
