"""The offline install (ctest python_client_install): a venv with the system's
site packages, then pip with no index and no build isolation, from a copy of
clients/python (so the checkout gets no build/ or egg-info). Uses Debian's
/usr/bin/python3 when it is there ($MEMD_PYCLIENT_PYTHON overrides)."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def system_python():
    explicit = os.environ.get("MEMD_PYCLIENT_PYTHON")
    if explicit:
        return explicit
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


class OfflineInstall(unittest.TestCase):
    def test_venv_pip_install_offline(self):
        python = system_python()
        with tempfile.TemporaryDirectory(prefix="memd-pyclient-install-") as tmp:
            src = os.path.join(tmp, "src")
            shutil.copytree(SOURCE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            venv = os.path.join(tmp, "V")
            subprocess.run([python, "-m", "venv", "--system-site-packages", venv], check=True, timeout=60)
            pip = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--no-build-isolation", "--no-index",
                                  src], capture_output=True, text=True, timeout=120)
            self.assertEqual(pip.returncode, 0, pip.stdout + pip.stderr)
            probe = ("import memd, sys; assert sys.prefix != sys.base_prefix; "
                     "assert memd.__file__.startswith(sys.prefix), memd.__file__; "
                     "assert all(hasattr(memd.Client, a) and hasattr(memd.StdioClient, a) for a in memd.ACTIONS); "
                     "print(memd.__file__, len(memd.ACTIONS))")
            run = subprocess.run([os.path.join(venv, "bin", "python"), "-c", probe], capture_output=True, text=True,
                                 timeout=60, cwd=tmp)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)


if __name__ == "__main__":
    unittest.main()
