"""Test settings: the real settings, with jobs run in-process and a throwaway data dir."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Always a throwaway dir: tests must never touch a real install's data.
os.environ["RAFTWEB_DATA_DIR"] = tempfile.mkdtemp(prefix="raftweb-test-")
atexit.register(shutil.rmtree, os.environ["RAFTWEB_DATA_DIR"], ignore_errors=True)
os.environ["RAFTWEB_HUEY_IMMEDIATE"] = "1"
os.environ["RAFTWEB_IGNORE_DOTENV"] = "1"  # a developer's .env must not change the tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Modules that import raftweb.asgi at collection must not start loading a model in the
# background (tests load it when they need it; tests/core/test_warmup.py turns this on).
os.environ.setdefault("RAFTWEB_EMBEDDING_WARMUP", "0")

from raftweb.settings import *  # noqa: E402,F403
from raftweb.settings import CACHES, DATABASES  # noqa: E402

# Test modules import raftweb.asgi, which marks the pytest process a web process: its queries
# would then be encoded in a child process. Keep them in-process unless a test's environment
# asks (tests/core/test_warmup.py checks the web process's default in a real subprocess).
if EMBED_PROCESS is None:  # noqa: F405 - "auto"
    EMBED_PROCESS = False

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# On SQLite the test database is a file in the throwaway dir, as the embedded default's is, not
# Django's in-memory default: there, with a shared cache, a writer that meets another's lock got
# "database table is locked" at once instead of waiting its busy timeout, so tests of racing
# workers failed on a lock no user's database reports.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"].setdefault("TEST", {})["NAME"] = os.path.join(
        os.environ["RAFTWEB_DATA_DIR"], "test.sqlite3"
    )
# Parallel test runs (several developers on one PostgreSQL) must not share a test database.
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    suffix = os.environ.get("RAFTWEB_TEST_DB_SUFFIX", "")
    DATABASES["default"].setdefault("TEST", {})["NAME"] = f"test_raftweb{suffix}"

# On Redis (REDIS_URL), the tests' cache keys get a prefix of their own: tests/conftest.py
# deletes them between tests, and must never touch anyone else's.
if CACHES["default"]["BACKEND"].endswith("RedisCache"):
    CACHES["default"]["KEY_PREFIX"] = f"raftweb-test-{os.getpid()}"
