"""Issue 4, sharing without accounts and the privacy officer's tools, against the real binary
with credentials required: share links (passcode throttling, birth-date check, expiry,
revocation, QR code, the viewer page and its images, download), guest upload links (STOW-RS with
the link's token and the browser form, size limits, quarantine inbox, reconciliation and
acceptance keeping the original identity, rejection), break-glass with the owning
organisation's report, "who saw", de-identified export, and the login / password pages."""
import io
import json
import os
import subprocess
import time
import uuid
import zipfile

import pydicom
import pytest
import requests

from conftest import BIN, Server, dcm_files, rejection_note

PW = "correct horse battery"


def admin(d, *args, stdin=None):
    p = subprocess.run([BIN, *args, "--data-dir", str(d)], input=stdin, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def token(d, org, role):
    return json.loads(admin(d, "admin", "token", "create", "--org", org, "--role", role,
                            "--name", f"{org}-{role}", "--json"))["token"]


def user(d, org, role, name):
    admin(d, "admin", "user", "create", "--org", org, "--role", role, "--username", name,
          "--password-stdin", stdin=PW + "\n")


def multipart_related(files):
    boundary = uuid.uuid4().hex
    body = b""
    for f in files:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += f.read_bytes() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(base, bearer, files):
    body, ct = multipart_related(files)
    return requests.post(f"{base}/dicom-web/studies", data=body,
                         headers={"Authorization": f"Bearer {bearer}", "Content-Type": ct})


def study_uid(files):
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def login(base, name):
    s = requests.Session()
    r = s.post(f"{base}/api/v1/auth/login", json={"username": name, "password": PW})
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf"]
    return s


def bearer(tok):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {tok}"
    return s


@pytest.fixture(scope="module")
def site(tmp_path_factory, synth_dir):
    root = tmp_path_factory.mktemp("sharing")
    d = root / "data"
    admin(d, "admin", "org", "create", "north")
    admin(d, "admin", "org", "create", "south")
    for org, role, name in [("north", "admin", "nadmin"), ("north", "clinician", "nclin"),
                            ("north", "radiographer", "nrad"), ("north", "auditor", "naud"),
                            ("south", "clinician", "sclin"), ("south", "admin", "sadmin")]:
        user(d, org, role, name)
    # nclin also works as a radiographer for south (STOW `?org=`).
    admin(d, "admin", "user", "join", "nclin", "--org", "south", "--role", "radiographer")
    toks = {"north": token(d, "north", "admin"), "south": token(d, "south", "admin")}
    srv = Server(d, extra_env={"VESALIUS__AUTH__REQUIRED": "true"}, callers=[])
    ct = [f for f in dcm_files(synth_dir) if "ct" in str(f).lower()][:6]
    mr = [f for f in dcm_files(synth_dir) if "mr" in str(f).lower()][:4]
    assert ct and mr, "the synthetic set has CT and MR studies"
    r = stow(srv.base, toks["north"], ct)
    assert r.status_code == 200, r.text
    r = stow(srv.base, toks["south"], mr)
    assert r.status_code == 200, r.text
    yield {"srv": srv, "dir": d, "tok": toks, "ct": ct, "mr": mr,
           "ct_study": study_uid(ct), "mr_study": study_uid(mr), "root": root}
    srv.stop()


def open_link(url, **answers):
    s = requests.Session()
    r = s.post(url, data=answers, allow_redirects=False) if answers else s.get(url, allow_redirects=False)
    return s, r


def test_share_link_with_passcode_views_downloads_and_is_revoked(site):
    base, study = site["srv"].base, site["ct_study"]
    nclin = login(base, "nclin")
    r = nclin.post(f"{base}/api/v1/studies/{study}/share-links",
                   json={"passcode": "4711", "allow_download": True, "ttl_hours": 2})
    assert r.status_code == 201, r.text
    link = r.json()
    assert link["url"].startswith(f"{base}/s/{link['id']}/") and "<svg" in link["qr_svg"]
    # Another organisation's study cannot be shared.
    r = nclin.post(f"{base}/api/v1/studies/{site['mr_study']}/share-links", json={})
    assert r.status_code == 404, r.text

    # The link asks for the passcode; a wrong one is refused.
    s, r = open_link(link["url"])
    assert r.status_code == 200 and "Passcode" in r.text
    s, r = open_link(link["url"], passcode="0000")
    assert r.status_code == 401 and "vesalius_link" not in r.headers.get("Set-Cookie", "")
    # The right one opens it: a pass cookie and the viewer page with the study's images.
    s, r = open_link(link["url"], passcode="4711")
    assert r.status_code == 303 and r.headers["Location"] == f"/s/{link['id']}", r.text
    assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
    # The web app's viewer page (issue 6), and the script-less page of rendered images.
    app = s.get(f"{base}/s/{link['id']}")
    assert app.status_code == 200 and "/js/main.js" in app.text, app.text[:500]
    info = s.get(f"{base}/s/{link['id']}/info").json()
    assert info["study_uid"] == study and info["allow_download"] is True
    page = s.get(f"{base}/s/{link['id']}/images")
    assert page.status_code == 200 and "/rendered" in page.text, page.text[:500]
    img = page.text.split("<img loading=lazy src='", 1)[1].split("'", 1)[0]
    r = s.get(base + img)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    # The pass opens this study only.
    r = s.get(f"{base}/dicom-web/studies", headers={"Accept": "application/dicom+json"})
    assert r.status_code == 200 and {a["0020000D"]["Value"][0] for a in r.json()} == {study}
    assert s.get(f"{base}/dicom-web/studies/{site['mr_study']}/metadata").status_code == 404
    # Download: a zip of every instance.
    r = s.get(f"{base}/s/{link['id']}/download")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert len(z.namelist()) == len(site["ct"])
    ds = pydicom.dcmread(io.BytesIO(z.read(z.namelist()[0])))
    assert str(ds.StudyInstanceUID) == study
    # A link can do nothing but read.
    assert s.delete(f"{base}/api/v1/studies/{study}").status_code in (401, 403)

    # Revocation ends the pass at once.
    r = nclin.delete(f"{base}/api/v1/share-links/{link['id']}")
    assert r.status_code == 200, r.text
    assert s.get(f"{base}/s/{link['id']}").status_code == 401
    assert s.get(f"{base}/s/{link['id']}/info").status_code == 401
    assert s.get(base + img).status_code == 401
    s2, r = open_link(link["url"], passcode="4711")
    assert r.status_code in (401, 403, 410) and "withdrawn" in r.text
    listed = {l["id"]: l for l in nclin.get(f"{base}/api/v1/share-links").json()["share_links"]}
    assert listed[link["id"]]["revoked"] is True


def test_share_link_passcode_guessing_is_throttled(site):
    base = site["srv"].base
    nclin = login(base, "nclin")
    link = nclin.post(f"{base}/api/v1/studies/{site['ct_study']}/share-links",
                      json={"passcode": "271828"}).json()
    codes = [open_link(link["url"], passcode=f"{i:06d}")[1].status_code for i in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429, codes
    # Locked: even the right passcode is refused for a while.
    assert open_link(link["url"], passcode="271828")[1].status_code == 429
    # A wrong secret is refused without counting.
    bad = link["url"].rsplit("/", 1)[0] + "/not-the-secret"
    assert open_link(bad, passcode="271828")[1].status_code == 401


def test_patient_access_by_birth_date_expiry_and_view_only(site):
    base, study = site["srv"].base, site["ct_study"]
    dob = str(pydicom.dcmread(site["ct"][0], stop_before_pixels=True).get("PatientBirthDate", ""))
    assert len(dob) == 8
    nclin = login(base, "nclin")
    link = nclin.post(f"{base}/api/v1/studies/{study}/share-links",
                      json={"birth_date": dob}).json()
    s, r = open_link(link["url"])
    assert r.status_code == 200 and "date of birth" in r.text
    assert open_link(link["url"], birth_date="1900-01-01")[1].status_code == 401
    s, r = open_link(link["url"], birth_date=f"{dob[:4]}-{dob[4:6]}-{dob[6:]}")
    assert r.status_code == 303, r.text
    assert s.get(f"{base}/s/{link['id']}").status_code == 200
    # View only: no download.
    assert s.get(f"{base}/s/{link['id']}/download").status_code == 403

    short = nclin.post(f"{base}/api/v1/studies/{study}/share-links", json={"ttl_hours": 0.0004}).json()
    time.sleep(2)
    s, r = open_link(short["url"])
    assert r.status_code in (401, 410) and "expired" in r.text


def test_guest_upload_quarantine_reconcile_accept_and_reject(site, tmp_path):
    base = site["srv"].base
    nclin = login(base, "nclin")
    size = sum(f.stat().st_size for f in site["mr"])
    r = nclin.post(f"{base}/api/v1/upload-links",
                   json={"label": "for Dr X, neurosurgery", "max_bytes": size * 2 + 4096})
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["token"].startswith("vsu_") and "<svg" in up["qr_svg"]
    # The web app's upload page (issue 6), its link details, and the script-less form.
    page = requests.get(up["url"])
    assert page.status_code == 200 and "/js/main.js" in page.text, page.text[:300]
    info = requests.get(up["url"] + "/info").json()
    assert info["label"] == "for Dr X, neurosurgery" and info["remaining_bytes"] == size * 2 + 4096
    page = requests.get(up["url"] + "?basic")
    assert page.status_code == 200 and "for Dr X, neurosurgery" in page.text and "<form" in page.text

    # A guest sends the MR study by STOW-RS with the link's token (the MR's own patient ID).
    mr_study = site["mr_study"]
    r = stow(base, up["token"], site["mr"][1:])
    assert r.status_code == 200, r.text
    # A third-party DICOMweb client does the same with the token as its bearer credential.
    from dicomweb_client.api import DICOMwebClient
    client = DICOMwebClient(url=f"{base}/dicom-web", headers={"Authorization": f"Bearer {up['token']}"})
    client.store_instances(datasets=[pydicom.dcmread(site["mr"][0])])
    # Too large for what the link still accepts: refused before reading.
    big, ct = multipart_related(site["mr"] * 3)
    r = requests.post(f"{base}/dicom-web/studies", data=big,
                      headers={"Authorization": f"Bearer {up['token']}", "Content-Type": ct})
    assert r.status_code == 413, r.text
    # Without a declared length: 411.
    r = requests.post(f"{base}/dicom-web/studies", data=(c for c in [big[:10], big[10:]]),
                      headers={"Authorization": f"Bearer {up['token']}", "Content-Type": ct})
    assert r.status_code == 411, r.text
    # A guest token opens nothing else.
    assert requests.get(f"{base}/dicom-web/studies",
                        headers={"Authorization": f"Bearer {up['token']}"}).status_code in (200, 204, 403)
    r = requests.get(f"{base}/dicom-web/studies", headers={"Authorization": f"Bearer {up['token']}",
                                                           "Accept": "application/dicom+json"})
    assert r.status_code == 204 or r.json() == [] or r.status_code == 403

    # Quarantine: nobody sees it in the archive, not even the receiving organisation.
    nadmin = bearer(site["tok"]["north"])
    qido = nadmin.get(f"{base}/dicom-web/studies", headers={"Accept": "application/dicom+json"}).json()
    assert mr_study not in {a["0020000D"]["Value"][0] for a in qido}
    # The inbox shows it to the organisation's reviewers only.
    inbox = nclin.get(f"{base}/api/v1/inbox").json()["studies"]
    assert [s["study_uid"] for s in inbox] == [mr_study]
    original_id = inbox[0]["patient_id"]
    assert login(base, "naud").get(f"{base}/api/v1/inbox").status_code == 403
    assert bearer(site["tok"]["south"]).get(f"{base}/api/v1/inbox").json()["studies"] == []

    # Reconcile to the local record and accept.
    r = nclin.post(f"{base}/api/v1/inbox/studies/{mr_study}/accept",
                   json={"patient_id": "MRN-0042", "issuer": "NORTH-PAS"})
    assert r.status_code == 200 and r.json()["accepted"] == len(site["mr"]), r.text
    assert nclin.get(f"{base}/api/v1/inbox").json()["studies"] == []
    qido = nadmin.get(f"{base}/dicom-web/studies", headers={"Accept": "application/dicom+json"},
                      params={"StudyInstanceUID": mr_study}).json()
    assert len(qido) == 1 and qido[0]["00100020"]["Value"] == ["MRN-0042"]
    r = nadmin.get(f"{base}/api/v1/studies/{mr_study}/archive")
    assert r.status_code == 200
    z = zipfile.ZipFile(io.BytesIO(r.content))
    ds = pydicom.dcmread(io.BytesIO(z.read(z.namelist()[0])))
    assert ds.PatientID == "MRN-0042" and ds.IssuerOfPatientID == "NORTH-PAS"
    assert ds.OtherPatientIDsSequence[0].PatientID == original_id
    mod = ds.OriginalAttributesSequence[0]
    assert mod.ReasonForTheAttributeModification == "COERCE"
    assert mod.ModifiedAttributesSequence[0].PatientID == original_id
    # The south organisation's own copy is untouched.
    south = bearer(site["tok"]["south"]).get(f"{base}/dicom-web/studies",
                                             headers={"Accept": "application/dicom+json"},
                                             params={"StudyInstanceUID": mr_study}).json()
    assert south[0]["00100020"]["Value"] == [original_id]

    # The browser form: one file, then rejected from the inbox.
    f = site["ct"][0]
    with open(f, "rb") as fh:
        r = requests.post(up["url"], files={"files": (f.name, fh, "application/dicom")},
                          headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and "1 file(s) received" in r.text, r.text
    inbox = nclin.get(f"{base}/api/v1/inbox").json()["studies"]
    assert [s["study_uid"] for s in inbox] == [site["ct_study"]]
    assert nclin.delete(f"{base}/api/v1/inbox/studies/{site['ct_study']}").status_code == 200
    assert nclin.get(f"{base}/api/v1/inbox").json()["studies"] == []
    # The archive's copy of that study (stored before) is intact.
    r = nadmin.get(f"{base}/dicom-web/studies/{site['ct_study']}/metadata")
    assert r.status_code == 200 and len(r.json()) == len(site["ct"])

    # Used bytes are counted; a revoked link stops working.
    used = {l["id"]: l for l in nclin.get(f"{base}/api/v1/upload-links").json()["upload_links"]}[up["id"]]
    assert used["used_bytes"] > size
    assert nclin.delete(f"{base}/api/v1/upload-links/{up['id']}").status_code == 200
    assert stow(base, up["token"], site["mr"][:1]).status_code in (401, 403, 410)
    assert requests.get(up["url"]).status_code in (401, 403, 410)


def test_break_glass_is_granted_flagged_and_reported(site):
    base, study = site["srv"].base, site["ct_study"]
    sclin = login(base, "sclin")
    assert sclin.get(f"{base}/dicom-web/studies/{study}/metadata").status_code == 404
    r = sclin.post(f"{base}/api/v1/studies/{study}/break-glass", json={"reason": "why"})
    assert r.status_code == 400, r.text
    assert login(base, "nrad").post(f"{base}/api/v1/studies/{site['mr_study']}/break-glass",
                                    json={"reason": "stroke alert, patient transferred"}).status_code == 403
    r = sclin.post(f"{base}/api/v1/studies/{study}/break-glass",
                   json={"reason": "stroke alert, patient transferred from north"})
    assert r.status_code == 200 and r.json()["org"] == "north", r.text
    assert sclin.get(f"{base}/dicom-web/studies/{study}/metadata").status_code == 200

    # The owning organisation's privacy officer (admin or auditor) sees it; others may not ask.
    naud = login(base, "naud")
    report = naud.get(f"{base}/api/v1/audit/break-glass").json()["records"]
    assert any(r["actor"]["name"] == "sclin" and "stroke alert" in r["details"]["reason"]
               and r["source"].startswith("127.0.0.1:") and "python-requests" in r["user_agent"]
               for r in report), report
    assert login(base, "nclin").get(f"{base}/api/v1/audit/break-glass").status_code == 403
    who = naud.get(f"{base}/api/v1/audit/who-saw", params={"study": study}).json()["records"]
    actors = {(r["actor"]["name"], r["action"]) for r in who}
    assert ("sclin", "break-glass") in actors and ("sclin", "retrieve") in actors, actors
    assert any(r["action"] == "link-use" for r in who), actors
    assert any(r["action"] == "export" for r in who), actors
    ds = pydicom.dcmread(site["ct"][0], stop_before_pixels=True)
    by_patient = naud.get(f"{base}/api/v1/audit/who-saw",
                          params={"patient_id": str(ds.PatientID),
                                  "issuer": str(ds.get("IssuerOfPatientID", ""))}).json()["records"]
    assert any(r["actor"]["name"] == "sclin" for r in by_patient)


def test_deidentified_export(site):
    base, study = site["srv"].base, site["ct_study"]
    nadmin = bearer(site["tok"]["north"])
    r = nadmin.post(f"{base}/api/v1/studies/{study}/export",
                    json={"deidentify": True, "key": "short"})
    assert r.status_code == 400
    r = nadmin.post(f"{base}/api/v1/studies/{study}/export",
                    json={"deidentify": True, "key": "project-key-0123456789",
                          "options": ["retain-longitudinal-full-dates"]})
    assert r.status_code == 200, r.text
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert len(z.namelist()) == len(site["ct"])
    src = pydicom.dcmread(site["ct"][0], stop_before_pixels=True)
    for n in z.namelist():
        ds = pydicom.dcmread(io.BytesIO(z.read(n)), stop_before_pixels=True)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientID != src.PatientID and ds.StudyInstanceUID != src.StudyInstanceUID
        assert ds.StudyDate == src.StudyDate
    # A radiographer may not take copies out.
    assert login(base, "nrad").post(f"{base}/api/v1/studies/{study}/export",
                                    json={}).status_code == 403


def test_login_and_password_pages(site):
    base = site["srv"].base
    s = requests.Session()
    # Issue 6: the login screen is the app's (its shell; tests/browser/login.test.mjs drives it).
    page = s.get(f"{base}/login")
    assert page.status_code == 200 and "/js/main.js" in page.text
    # No identity provider configured: no button.
    # "Keep me signed in" is offered for the default 30 days.
    assert s.get(f"{base}/api/v1/auth/methods").json() == {"password": True, "remember_days": 30, "oidc": None}
    # A stale session cookie or link pass does not lock anybody out of the login page.
    stale = requests.get(f"{base}/login", cookies={"vesalius_session": "gone", "vesalius_link": "x.1.y"})
    assert stale.status_code == 200 and "/js/main.js" in stale.text
    assert requests.get(f"{base}/api/v1/auth/methods",
                        cookies={"vesalius_session": "gone"}).status_code == 200
    gone = requests.get(f"{base}/dicom-web/studies", cookies={"vesalius_session": "gone"})
    assert gone.status_code == 401
    # Whatever the stale session left in the browser's cache is deleted (issue 6).
    assert gone.headers["Clear-Site-Data"] == '"cache"'
    r = s.post(f"{base}/login?next=//evil.example/", data={"username": "nrad", "password": "nope nope"},
               allow_redirects=False)
    assert r.status_code == 401 and "<form" in r.text
    r = s.post(f"{base}/login?next=//evil.example/", data={"username": "nrad", "password": PW},
               allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/", r.headers
    assert s.get(f"{base}/account/password").status_code == 200
    new = "a new long passphrase"
    # A cross-site post (no CSRF header, not same-origin) is refused.
    r = s.post(f"{base}/account/password", data={"current": PW, "new": new})
    assert r.status_code == 403
    r = s.post(f"{base}/account/password", data={"current": PW, "new": new},
               headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and "changed" in r.text, r.text
    r = requests.post(f"{base}/api/v1/auth/login", json={"username": "nrad", "password": new})
    assert r.status_code == 200
    # Without "Keep me signed in" the cookie ends with the browser; with it, it lasts 30 days.
    assert "Max-Age" not in r.headers["Set-Cookie"] and r.json()["remembered"] is False
    r = requests.post(f"{base}/api/v1/auth/login", json={"username": "nrad", "password": new, "remember": True})
    assert r.status_code == 200 and r.json()["remembered"] is True
    assert "Max-Age=2592000" in r.headers["Set-Cookie"], r.headers["Set-Cookie"]
    # The app's password screen: the JSON endpoint, with the session's CSRF token only.
    js = requests.Session()
    csrf = js.post(f"{base}/api/v1/auth/login", json={"username": "nrad", "password": new}).json()["csrf"]
    newer = "an even newer passphrase"
    r = js.post(f"{base}/api/v1/auth/password", json={"current": new, "new": newer})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = js.post(f"{base}/api/v1/auth/password", json={"current": "wrong wrong wrong", "new": newer},
                headers={"X-CSRF-Token": csrf})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = js.post(f"{base}/api/v1/auth/password", json={"current": new, "new": "short"},
                headers={"X-CSRF-Token": csrf})
    assert r.status_code == 400 and r.json()["error"] == "bad-request"
    r = js.post(f"{base}/api/v1/auth/password", json={"current": new, "new": newer},
                headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json() == {"status": "changed"}
    assert requests.post(f"{base}/api/v1/auth/login",
                         json={"username": "nrad", "password": newer}).status_code == 200


def test_stow_into_another_of_the_users_organisations(site):
    """STOW-RS `?org=`: a user in several organisations names where to store; membership and
    the role there decide."""
    base = site["srv"].base
    nclin = login(base, "nclin")
    body, ct = multipart_related(site["ct"][:1])
    h = {"Content-Type": ct, "Accept": "application/dicom+json"}
    # As a clinician of north (the session's organisation): clinicians do not store.
    r = nclin.post(f"{base}/dicom-web/studies", data=body, headers=h)
    assert r.status_code == 403
    # Refused before the body was read: the server closes that connection and says so, so the
    # client's next request does not meet a closed keep-alive connection.
    assert r.headers.get("Connection", "").lower() == "close"
    # Not a member of that organisation.
    assert nclin.post(f"{base}/dicom-web/studies?org=nowhere", data=body, headers=h).status_code == 403
    r = nclin.post(f"{base}/dicom-web/studies?org=south", data=body, headers=h)
    assert r.status_code == 200, r.text
    south = bearer(site["tok"]["south"]).get(f"{base}/dicom-web/studies", headers={"Accept": "application/dicom+json"},
                                             params={"StudyInstanceUID": site["ct_study"]}).json()
    assert len(south) == 1


def test_a_rejection_note_from_a_guest_hides_nothing_even_once_accepted(site, tmp_path):
    # IHE IOCM: a Key Object Selection titled (113001, DCM, "Rejected for Quality Reasons")
    # hides the instances it lists. A guest upload link is not a right to withdraw what the
    # organisation holds: such a note (built here with pydicom, naming a CT instance north
    # holds) is kept as a document, in the quarantine inbox and after a user accepts it.
    base = site["srv"].base
    nclin, nadmin = login(base, "nclin"), bearer(site["tok"]["north"])
    target = pydicom.dcmread(site["ct"][0], stop_before_pixels=True)
    note = tmp_path / "rejection-note.dcm"
    ds = rejection_note(site["ct"][0], note, patient_id="GUEST-1")

    def held():
        r = nadmin.get(f"{base}/dicom-web/studies/{target.StudyInstanceUID}/instances",
                       headers={"Accept": "application/dicom+json"})
        return {a["00080018"]["Value"][0] for a in r.json()} if r.status_code == 200 else set()

    assert target.SOPInstanceUID in held()
    up = nclin.post(f"{base}/api/v1/upload-links", json={"label": "guest note", "max_bytes": 1 << 20}).json()
    r = stow(base, up["token"], [note])
    assert r.status_code == 200, r.text
    assert target.SOPInstanceUID in held()
    r = nclin.post(f"{base}/api/v1/inbox/studies/{ds.StudyInstanceUID}/accept",
                   json={"patient_id": "MRN-0043", "issuer": "NORTH-PAS"})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    # The note is the organisation's now, and the CT instance it names is still there.
    r = nadmin.get(f"{base}/dicom-web/studies/{ds.StudyInstanceUID}/instances",
                   headers={"Accept": "application/dicom+json"})
    assert r.status_code == 200 and len(r.json()) == 1
    assert target.SOPInstanceUID in held(), "a guest's rejection note hid an instance of the organisation"
