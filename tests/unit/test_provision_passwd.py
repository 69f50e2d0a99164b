"""Mosquitto's password-file format, checked against ``mosquitto_passwd`` itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_trainer.provision.mosquitto_passwd import (
    MosquittoPasswordFile,
    PasswordFileError,
    generate_password,
    hash_password,
    verify_password,
)

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "mosquitto_passwd"
needs_tool = pytest.mark.skipif(
    shutil.which(MOSQUITTO_PASSWD) is None, reason="mosquitto_passwd not installed"
)


@needs_tool
def test_we_verify_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(path), "alice", "s3cret"], check=True)
    loaded = MosquittoPasswordFile.load(path)
    assert loaded.check("alice", "s3cret")
    assert not loaded.check("alice", "s3cret ")
    assert not loaded.check("bob", "s3cret")


@needs_tool
def test_mosquitto_passwd_keeps_our_entries_when_it_edits_the_file(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    ours = MosquittoPasswordFile(path)
    ours.set_password("site.cam-01", "p1")
    ours.save()
    subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), "bob", "p2"], check=True)
    merged = MosquittoPasswordFile.load(path)
    assert merged.check("site.cam-01", "p1") and merged.check("bob", "p2")
    assert list(merged.entries) == ["site.cam-01", "bob"]


def test_hash_has_mosquitto_layout() -> None:
    hashed = hash_password("pw", salt=b"\x00" * 12)
    tag, iterations, salt, digest = hashed.split("$")[1:]
    assert (tag, iterations, salt) == ("7", "101", "AAAAAAAAAAAAAAAA")
    assert len(digest) == 88  # base64 of 64 bytes


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_round_trip_accepts_only_the_same_password(password: str, other: str) -> None:
    hashed = hash_password(password, iterations=2)
    assert verify_password(password, hashed)
    assert verify_password(other, hashed) == (other == password)


def test_generated_passwords_are_long_and_distinct() -> None:
    passwords = {generate_password() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) >= 43 and p.isascii() and ":" not in p for p in passwords)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("alice\n", "expected 'username:"),
        ("alice:plain\n", "expected 'username:"),
        ("alice:$7$1$AA==$AA==\nalice:$7$1$AA==$AA==\n", "duplicate user 'alice'"),
    ],
)
def test_malformed_files_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "passwd"
    path.write_text(content)
    with pytest.raises(PasswordFileError, match=message):
        MosquittoPasswordFile.load(path)


@pytest.mark.parametrize("username", ["a:b", "with space", "", "tab\there"])
def test_usernames_that_would_corrupt_the_file_are_refused(username: str) -> None:
    with pytest.raises(PasswordFileError, match="invalid broker username"):
        MosquittoPasswordFile(Path("unused")).set_password(username, "pw")


def test_malformed_hash_is_an_error_not_a_mismatch() -> None:
    with pytest.raises(PasswordFileError, match="malformed"):
        verify_password("pw", "$7$101$!!!$AA==")
    with pytest.raises(PasswordFileError, match="not a mosquitto"):
        verify_password("pw", "$6$abc$def")
