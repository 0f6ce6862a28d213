"""Issue 6, black box: a radiologist of a hub that hosts two trusts holds a role in each
(`vesalius admin user join USER ORG --role ROLE`), logs in once and switches the organisation
the session acts in (`POST /api/v1/auth/session/org`): QIDO-RS and WADO-RS through
dicomweb-client then answer for the active organisation only, with the role held there; an
organisation the user is not a member of is refused; API tokens stay bound to theirs; the next
login starts where the user left; joining and leaving through the JSON API (site administrator)
and the command line, audited."""
import json
import os
import subprocess
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from conftest import BIN, Server, dcm_files

PASSWORD = "correct horse battery staple"


def cli(data, *args, check=True):
    env = dict(os.environ, VES_PW=PASSWORD)
    r = subprocess.run([BIN, *args[:2], "--data-dir", str(data), *args[2:]], capture_output=True,
                       text=True, env=env)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def study(tmp: Path, seed: int):
    """A synthetic two-slice CT head: its Study Instance UID and datasets."""
    out = tmp / f"synth-{seed}"
    subprocess.run([BIN, "synth", "--out", str(out), "--seed", str(seed), "--slices", "2",
                    "--kinds", "ct-head", "--patients", "1"], check=True, capture_output=True)
    ds = [pydicom.dcmread(p) for p in dcm_files(out)]
    uids = {d.StudyInstanceUID for d in ds}
    assert len(uids) == 1
    return uids.pop(), ds


def login(base, username):
    s = requests.Session()
    r = s.post(f"{base}/api/v1/auth/login", json={"username": username, "password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    return s, r.json()


def studies_seen(base, s):
    """The Study Instance UIDs a QIDO-RS search of the session finds (dicomweb-client)."""
    client = DICOMwebClient(url=f"{base}/dicom-web", session=s)
    return {r["0020000D"]["Value"][0] for r in client.search_for_studies()}


def can_open(base, s, uid):
    """Whether WADO-RS answers the study's metadata to the session (404 when not visible)."""
    client = DICOMwebClient(url=f"{base}/dicom-web", session=s)
    try:
        client.retrieve_study_metadata(uid)
        return True
    except requests.HTTPError as e:
        assert e.response.status_code == 404, e.response.text
        return False


@pytest.fixture
def hub(tmp_path):
    """Trusts `north` and `south` (and `east`) on one site; `reader` is a clinician of north and
    an administrator of south; one study stored into each trust through a token of it."""
    data = tmp_path / "data"
    for org, name in (("north", "North Trust"), ("south", "South Trust"), ("east", "East Trust")):
        cli(data, "admin", "org", "create", org, "--name", name)
    cli(data, "admin", "user", "create", "--org", "north", "--role", "clinician", "--username", "reader",
        "--password-env", "VES_PW")
    # The positional form of the brief (`--org ORG` works too, tests/interop/test_admin.py).
    out = cli(data, "admin", "user", "join", "reader", "south", "--role", "admin")
    assert "reader is admin in south" in out.stdout
    cli(data, "admin", "user", "create", "--org", "north", "--role", "admin", "--username", "chief",
        "--password-env", "VES_PW", "--site-admin")
    tokens = {}
    for org in ("north", "south"):
        out = cli(data, "admin", "token", "create", "--org", org, "--role", "service", "--name", f"{org}-gw", "--json")
        tokens[org] = json.loads(out.stdout)["token"]
    srv = Server(data, extra_env={"VESALIUS__AUTH__REQUIRED": "true"})
    uids = {}
    for org, seed in (("north", 61), ("south", 62)):
        uid, ds = study(tmp_path, seed)
        DICOMwebClient(url=srv.dicomweb, headers={"Authorization": f"Bearer {tokens[org]}"}).store_instances(ds)
        uids[org] = uid
    try:
        yield {"srv": srv, "data": data, "tokens": tokens, "uids": uids}
    finally:
        srv.kill()


def test_a_session_switches_organisation_and_sees_only_the_active_ones_studies(hub):
    base, uids = hub["srv"].base, hub["uids"]
    s, who = login(base, "reader")
    csrf = who["csrf"]
    assert who["org"] == "north", "the first login starts in the first organisation"
    me = s.get(f"{base}/api/v1/auth/me").json()
    assert me["role"] == "clinician"
    assert [(o["id"], o["name"], o["role"], o["current"]) for o in me["orgs"]] == [
        ("north", "North Trust", "clinician", True), ("south", "South Trust", "admin", False)]
    assert studies_seen(base, s) == {uids["north"]}
    assert can_open(base, s, uids["north"]) and not can_open(base, s, uids["south"])
    # A clinician of north administers nothing.
    assert s.get(f"{base}/api/v1/users").status_code == 403

    switch = f"{base}/api/v1/auth/session/org"
    # The CSRF token is required; an organisation the user is not a member of, or that does not
    # exist, is refused alike.
    assert s.post(switch, json={"org": "south"}).status_code == 403
    for other in ("east", "nowhere"):
        r = s.post(switch, json={"org": other}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    assert s.get(f"{base}/api/v1/auth/me").json()["org"] == "north"

    r = s.post(switch, json={"org": "south"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert (r.json()["org"], r.json()["role"]) == ("south", "admin")
    assert studies_seen(base, s) == {uids["south"]}
    assert can_open(base, s, uids["south"]) and not can_open(base, s, uids["north"])
    # Administrator in south: the console's API answers, for south's users.
    users = s.get(f"{base}/api/v1/users").json()["users"]
    assert "reader" in {u["username"] for u in users}

    # Tokens stay bound to their organisation, and never switch.
    north = {"Authorization": f"Bearer {hub['tokens']['north']}"}
    t = requests.Session()
    t.headers.update(north)
    assert studies_seen(base, t) == {uids["north"]}
    r = requests.post(switch, json={"org": "south"}, headers=north, timeout=30)
    assert r.status_code == 403, r.text

    # The next login starts where the user left.
    assert s.post(f"{base}/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    s2, who2 = login(base, "reader")
    assert who2["org"] == "south"
    assert studies_seen(base, s2) == {uids["south"]}

    events = [r["event"] for r in json.loads(cli(hub["data"], "audit", "search", "--action", "org-switch",
                                                 "--json").stdout)]
    outcomes = sorted((e["outcome"], e["details"]["to"]) for e in events)
    assert outcomes == [("denied", "east"), ("denied", "nowhere"), ("success", "south")], outcomes
    ok = next(e for e in events if e["outcome"] == "success")
    assert ok["org"] == "south" and ok["details"]["from"] == "north" and ok["actor"]["name"] == "reader"


def test_joining_and_leaving_through_the_api_and_the_command_line(hub):
    base, data = hub["srv"].base, hub["data"]
    reader, who = login(base, "reader")
    csrf = {"X-CSRF-Token": who["csrf"]}
    assert reader.post(f"{base}/api/v1/auth/session/org", json={"org": "south"}, headers=csrf).status_code == 200
    members = f"{base}/api/v1/users/%s/memberships/%s"
    # South's administrator cannot hand out a role in east (not theirs), nor change north's
    # members they cannot see, nor leave south while acting there.
    r = reader.put(members % ("reader", "east"), json={"role": "clinician"}, headers=csrf)
    assert r.status_code == 403, r.text
    r = reader.put(members % ("chief", "south"), json={"role": "clinician"}, headers=csrf)
    assert r.status_code == 404, r.text
    r = reader.delete(members % ("reader", "south"), headers=csrf)
    assert r.status_code == 409, r.text

    # The site administrator adds the reader to east, changes the role, and takes it away.
    chief, cw = login(base, "chief")
    ccsrf = {"X-CSRF-Token": cw["csrf"]}
    r = chief.put(members % ("reader", "east"), json={"role": "referrer"}, headers=ccsrf)
    assert r.status_code == 201 and r.json()["change"] == "added", r.text
    r = chief.put(members % ("reader", "east"), json={"role": "clinician"}, headers=ccsrf)
    assert r.status_code == 200 and r.json()["change"] == "role-changed", r.text
    r = chief.put(members % ("reader", "east"), json={"role": "service"}, headers=ccsrf)
    assert r.status_code == 400, r.text
    assert {o["id"] for o in reader.get(f"{base}/api/v1/auth/me").json()["orgs"]} == {"north", "south", "east"}
    r = reader.post(f"{base}/api/v1/auth/session/org", json={"org": "east"}, headers=csrf)
    assert r.status_code == 200 and r.json()["role"] == "clinician", r.text
    assert studies_seen(base, reader) == set()
    r = chief.delete(members % ("reader", "east"), headers=ccsrf)
    assert r.status_code == 200, r.text
    assert {m["org"] for m in r.json()["user"]["memberships"]} == {"north", "south"}
    # The session acting in east is refused from its next request: log in again.
    assert reader.get(f"{base}/api/v1/auth/me").status_code == 401

    # The command line: leaving south revokes the user's tokens of south.
    out = cli(data, "admin", "token", "create", "--org", "south", "--role", "admin", "--name", "r",
              "--user", "reader", "--json")
    token = json.loads(out.stdout)["token"]
    assert requests.get(f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert "reader left south" in cli(data, "admin", "user", "leave", "reader", "south").stdout
    assert requests.get(f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    r = cli(data, "admin", "user", "leave", "reader", "north", check=False)
    assert r.returncode != 0 and "only organisation" in r.stderr, r.stderr
    _, again = login(base, "reader")
    assert again["org"] == "north"

    events = [r["event"] for r in json.loads(cli(data, "audit", "search", "--action", "admin-change",
                                                 "--json").stdout)]
    changes = sorted((e["details"].get("change"), e["org"], e["actor"]["name"]) for e in events
                     if str(e["details"].get("change", "")).startswith("membership"))
    assert ("membership-add", "east", "chief") in changes, changes
    assert ("membership-set", "east", "chief") in changes, changes
    assert ("membership-remove", "east", "chief") in changes, changes
    # The command line's join (fixture) and leave, by the OS user who ran them.
    assert any(c[:2] == ("membership-add", "south") and c[2] != "chief" for c in changes), changes
    assert any(c[:2] == ("membership-remove", "south") and c[2] != "chief" for c in changes), changes
