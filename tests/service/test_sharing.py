"""Sharing mode: who may start the app, sign in, read which folders, and delete which runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tl_core.errors import DataError, RunError
from tl_core.runs.history import delete_run, list_runs
from tl_core.service.sharing import Access, AccessError, Sharing, SignIns, is_loopback, visitor_key

PASSWORD = "correct horse battery"


@pytest.mark.parametrize(("address", "loopback"), [("localhost", True), ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True),
                                                   ("0.0.0.0", False), ("", False), ("192.168.1.20", False), ("gpu-box.lab", False), ("::", False)])
def test_only_loopback_addresses_count_as_this_machine(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_a_server_others_can_reach_refuses_to_start_without_a_sign_in() -> None:
    with pytest.raises(AccessError, match=re.escape(
        "The app is set to listen on '0.0.0.0', where other computers can reach it, but no sign-in is configured. Set TL_APP_PASSWORD to a password of at least 12 characters"
    )):
        Sharing("0.0.0.0", hosts=("gpu-box.lab",)).check()
    with pytest.raises(AccessError, match="listen on every network interface"):
        Sharing("").check()
    with pytest.raises(AccessError, match=re.escape("TL_APP_PASSWORD has 6 characters while at least 12 are required.")):
        Sharing("0.0.0.0", password="secret", hosts=("gpu-box.lab",)).check()
    with pytest.raises(AccessError, match=re.escape("server.allowedHosts names only localhost, 127.0.0.1, ::1, so it would refuse every visitor from another computer")):
        Sharing("0.0.0.0", password=PASSWORD, hosts=("localhost", "127.0.0.1", "::1")).check()
    Sharing("0.0.0.0", password=PASSWORD, hosts=("gpu-box.lab", "localhost")).check()
    with pytest.raises(AccessError, match=re.escape("st.login is configured, and it signs in every account the identity provider knows (with a public provider, anyone). Set TL_APP_ALLOWED_USERS")):
        Sharing("0.0.0.0", identity_provider=True, hosts=("gpu-box.lab",)).check()
    Sharing("0.0.0.0", identity_provider=True, hosts=("gpu-box.lab",), allowed_users=("@lab.example",)).check()
    Sharing("localhost").check()  # one person's tool, as before
    assert not Sharing("localhost").enabled
    assert Sharing("localhost", password=PASSWORD).mode == "password"  # a password means sharing, behind a proxy too


def test_sharing_settings_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_APP_PASSWORD", PASSWORD)
    monkeypatch.setenv("TL_CORE_BROWSE_ROOT", str(tmp_path))
    sharing = Sharing.from_environment("0.0.0.0", ["gpu-box.lab", " "])
    assert (sharing.mode, sharing.data_root, sharing.hosts) == ("password", tmp_path.resolve(), ("gpu-box.lab",))
    assert PASSWORD not in repr(sharing)
    assert sharing.access("v1") == Access(sharing=True, data_root=tmp_path.resolve(), visitor="v1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_password_is_checked_and_repeated_guesses_are_paused() -> None:
    clock = Clock()
    sign_ins = SignIns(PASSWORD, per_client=3, overall=5, window=600, lifetime=3600, clock=clock)
    wrong = sign_ins.attempt("guess", "10.0.0.9", "visitor-a")
    assert not wrong.ok and wrong.retry_after == 0
    assert wrong.message == "That is not the password of this app. Type the password the app's owner gave you (2 more tries before sign-ins from this computer pause)."
    sign_ins.attempt("guess 2", "10.0.0.9")
    third = sign_ins.attempt("guess 3", "10.0.0.9")
    assert third.retry_after == 600
    paused = sign_ins.attempt(PASSWORD, "10.0.0.9")  # even the right password waits: a paused client's guesses are not compared
    assert not paused.ok and paused.retry_after == 600
    assert paused.message == (
        "Too many wrong passwords were tried from this computer; sign-ins are paused for 10 minutes. Wait, then try again with the password the app's owner gave you."
    )
    assert sign_ins.attempt(PASSWORD, "10.0.0.7", "visitor-b").ok  # another computer is not held back
    sign_ins.attempt("x", "10.0.0.5")
    sign_ins.attempt("y", "10.0.0.6")  # five failures in all: everyone waits
    assert sign_ins.attempt(PASSWORD, "10.0.0.8").retry_after > 0
    clock.now += 601
    signed_in = sign_ins.attempt(PASSWORD, "10.0.0.9", "visitor-a")
    assert signed_in.ok and sign_ins.visitor(signed_in.token) == visitor_key("visitor-a")
    assert sign_ins.visitor("made-up-token") is None and sign_ins.visitor("") is None
    clock.now += 3601
    assert sign_ins.visitor(signed_in.token) is None  # expired
    again = sign_ins.attempt(PASSWORD, "10.0.0.9", "visitor-a")
    sign_ins.sign_out(again.token)
    assert sign_ins.visitor(again.token) is None


def test_typed_folders_are_confined_to_the_data_root(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    (root / "ants").mkdir(parents=True)
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (root / "escape").symlink_to(tmp_path / "home")
    shared = Access(sharing=True, data_root=root, visitor="v")
    assert shared.local_folder(str(root / "ants")) == (root / "ants").resolve()
    assert shared.local_folder("ants") == (root / "ants").resolve()  # relative to the data root
    for outside in (str(tmp_path / "home" / ".ssh"), f"{root}/../home", "escape/.ssh", "/etc"):
        with pytest.raises(DataError, match=re.escape(f"'{outside}' is outside '{root.resolve()}', the data folder of this shared app")):
            shared.local_folder(outside)
    assert shared.browse_root() == root
    with pytest.raises(DataError, match="its owner has named no data folder, so folders on the server cannot be used. Upload the folder"):
        Access(sharing=True).local_folder(str(root / "ants"))
    assert Access().local_folder(str(tmp_path / "home" / ".ssh")) == tmp_path / "home" / ".ssh"  # the local app: any folder, as before


def _run(runs: Path, name: str, created_by: str = "") -> Path:
    folder = runs / name
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": "finished", **({"created_by": created_by} if created_by else {})}))
    return folder


def test_on_a_shared_app_a_run_is_deleted_only_by_whoever_trained_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    mine, theirs, unsigned = _run(runs, "mine", visitor_key("me")), _run(runs, "theirs", visitor_key("them")), _run(runs, "old")
    me = Access(sharing=True, visitor=visitor_key("me"))
    assert {record.name: record.created_by for record in list_runs(runs)} == {"mine": visitor_key("me"), "theirs": visitor_key("them"), "old": ""}
    assert me.may_delete(visitor_key("me")) == ""
    for folder, who in ((theirs, "trained by someone else"), (unsigned, "trained without a sign-in")):
        with pytest.raises(RunError, match=re.escape(f"'{folder.name}' was not deleted. On a shared app a run can be deleted only by whoever trained it (signed in as they were then), and this run was {who}")):
            delete_run(folder, runs, may_delete=me.may_delete)
        assert folder.is_dir()
    delete_run(mine, runs, may_delete=me.may_delete)
    assert not mine.exists()
    delete_run(theirs, runs, may_delete=Access().may_delete)  # the local app deletes any run, as before
    assert not theirs.exists()


def test_st_login_lets_in_only_the_listed_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_APP_ALLOWED_USERS", " Ada@Lab.example ; @physics.example.org,")
    sharing = Sharing.from_environment("0.0.0.0", ["gpu-box.lab"], identity_provider=True)
    assert sharing.allowed_users == ("ada@lab.example", "@physics.example.org")
    assert sharing.admits("ada@lab.example") and sharing.admits("ADA@lab.example ") and sharing.admits("bo@physics.example.org")
    assert not sharing.admits("eve@lab.example")  # another person of the same domain: only ada is listed there
    assert not sharing.admits("eve@evil-physics.example.org") and not sharing.admits("physics.example.org") and not sharing.admits(None)
    assert not sharing.admits("eve@physics.example.org.evil.example")
    assert Sharing("0.0.0.0", identity_provider=True, allowed_users=("*",)).admits("anyone@anywhere.example")
