"""A real full disk for the tests: a small tmpfs in a private mount namespace.

``unshare --user --map-root-user --mount`` gives the shell its own mount table (no root needed,
nothing visible outside, gone with the process), so a script under test meets a real ENOSPC
from the kernel, not a mock.
"""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILL = 'dd if=/dev/zero of={folder}/filler bs=4k 2>/dev/null'  # a step that takes what space is left


def run_in_tmpfs(folder, size, steps, copy_to=None, timeout=240):
    """Mount a tmpfs of ``size`` bytes at ``folder``, run the shell ``steps`` there one after the
    other (``{folder}`` in a step is replaced), remove the filler, copy what the tmpfs holds to
    ``copy_to`` (if given); returns the ``CompletedProcess`` (the last step's exit code)."""
    steps = [step.replace('{folder}', str(folder)) for step in steps]
    after = f'rm -f {folder}/filler; ' + (f'cp -a {folder}/. {copy_to}; ' if copy_to else '')
    script = f'mount -t tmpfs -o size={size} tmpfs {folder} && {{ {"; ".join(steps)}; code=$?; {after}exit $code; }}'
    return subprocess.run(['unshare', '--user', '--map-root-user', '--mount', 'sh', '-c', script], cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True, text=True, timeout=timeout)
