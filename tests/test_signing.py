"""Signed uploads (issue 17, build item 7): `bench keys new`, `bench upload --sign KEY`, and
`--trust KEYS` on `costmodel build/query` and `compare --store`, which then show only runs
signed by those keys and name the others as excluded. Unsigned stores keep working."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from result_factory import make_run

from bench.cli import cli
from bench.store import Store, upload
from bench.store.signing import (
    load_signer,
    load_trusted,
    signature_rel,
    verify_run,
)


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def keys(tmp_path):
    """Two key pairs: alice (trusted by the readers below) and mallory."""
    out = {}
    for name in ("alice", "mallory"):
        res = _cli("keys", "new", "--out", tmp_path / "keys", "--name", name)
        assert res.exit_code == 0, res.output
        out[name] = (res.stdout.strip(), tmp_path / "keys" / f"{name}.key", tmp_path / "keys" / f"{name}.pub")
    return out


@pytest.fixture
def three_runs(tmp_path, keys):
    """A local store with a run signed by alice (h100-sxm), one by mallory (b200), one unsigned (l4)."""
    url = str(tmp_path / "store")
    ids = {}
    for hardware, key in (("h100-sxm", "alice"), ("b200", "mallory"), ("l4", None)):
        run = make_run(tmp_path / "runs", hardware=hardware, concurrencies=(1, 4))
        args = ["upload", run, "--to", url] + (["--sign", keys[key][1]] if key else [])
        res = _cli(*args)
        assert res.exit_code == 0, res.output
        ids[hardware] = re.search(r"(published|already there): (\S+)", res.stdout).group(2)
        if key:
            assert f"signed by key {keys[key][0]}" in res.stdout
    return url, ids


def test_keys_new_writes_a_private_key_only_its_owner_reads_and_prints_its_id(tmp_path, keys):
    key_id, private, public = keys["alice"]
    assert re.fullmatch(r"[0-9a-f]{16}", key_id)
    assert private.stat().st_mode & 0o777 == 0o600
    assert load_signer(private).key_id == key_id
    assert list(load_trusted([public]).keys) == [key_id]
    again = _cli("keys", "new", "--out", tmp_path / "keys", "--name", "alice")
    assert again.exit_code == 2 and "never replaced" in again.output
    assert load_signer(private).key_id == key_id  # untouched


@pytest.mark.slow
def test_trust_shows_only_runs_signed_by_the_trusted_keys(tmp_path, keys, three_runs):
    url, ids = three_runs
    res = _cli("costmodel", "query", "--store", url, "--trust", keys["alice"][2])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(io.StringIO(res.stdout))
    assert set(rows["run_id"]) == {ids["h100-sxm"]} and len(rows) == 2
    assert f"bench: excluded: {ids['b200']}: not signed by a trusted key" in res.stderr
    assert f"bench: excluded: {ids['l4']}: not signed by a trusted key" in res.stderr
    assert "2 run(s) excluded" in res.stderr
    # a folder of public keys trusts each; --where still prunes the partitions read
    both = _cli("costmodel", "query", "--store", url, "--trust", tmp_path / "keys", "--where", "hardware=b200")
    assert set(pd.read_csv(io.StringIO(both.stdout))["run_id"]) == {ids["b200"]} and "excluded" not in both.stderr
    # unsigned stores, and reads without --trust, keep working: every run
    plain = _cli("costmodel", "query", "--store", url)
    assert set(pd.read_csv(io.StringIO(plain.stdout))["run_id"]) == set(ids.values())


@pytest.mark.slow
def test_compare_and_build_with_trust(tmp_path, keys, three_runs):
    url, ids = three_runs
    res = _cli("compare", "--store", url, "--model", "tiny-llama", "--baseline", "h100-sxm",
               "--trust", keys["alice"][2], "--out", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert "h100-sxm" in res.stdout and "b200" not in res.stdout and "l4" not in res.stdout.replace("l4", "", 0)
    assert "2 run(s) excluded" in res.stderr
    built = _cli("costmodel", "build", "--store", url, "--trust", keys["mallory"][2], "--out", tmp_path / "out")
    assert built.exit_code == 0, built.output
    table = pd.read_parquet(tmp_path / "out" / "costmodel.parquet")
    assert set(table["run_id"]) == {ids["b200"]}
    assert "left as it is" in built.stdout and not (Path(url) / "costmodel" / "costmodel.parquet").exists()


def _signed_point_file(url: str, run_id: str) -> Path:
    [path] = list((Path(url) / "costmodel" / "points").rglob(f"{run_id}.parquet"))
    return path


@pytest.mark.slow
def test_a_changed_point_file_of_a_signed_run_is_excluded(tmp_path, keys, three_runs):
    url, ids = three_runs
    path = _signed_point_file(url, ids["h100-sxm"])
    table = pq.read_table(path)
    frame = table.to_pandas()
    frame["tok_s_per_gpu"] *= 10  # a careful forger: still a valid point file of the same run
    pq.write_table(pq.read_table(io.BytesIO(_parquet(frame))).cast(table.schema), path)
    res = _cli("costmodel", "query", "--store", url, "--trust", keys["alice"][2], "--trust", keys["mallory"][2])
    assert res.exit_code == 0, res.output
    assert set(pd.read_csv(io.StringIO(res.stdout))["run_id"]) == {ids["b200"]}
    assert f"bench: excluded: {ids['h100-sxm']}: " in res.stderr and "its signature says" in res.stderr


def _parquet(frame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


@pytest.mark.parametrize("forge, why", [
    ("copied", "names another format, key or run"),
    ("edited", "bad signature"),
    ("manifest", "signed another manifest"),
])
@pytest.mark.slow
def test_forged_signatures_exclude_the_run(tmp_path, keys, three_runs, forge, why):
    url, ids = three_runs
    store = Store(url)
    key_id = keys["alice"][0]
    good = Path(url) / signature_rel(ids["h100-sxm"], key_id)
    doc = json.loads(good.read_text())
    target = ids["h100-sxm"]
    if forge == "copied":  # alice's signature of one run put beside another
        target = ids["l4"]
    elif forge == "edited":  # the statement changed after signing
        doc["point_files"] = {}
    else:  # a manifest field changed after signing (its file list, checked by its hash, is intact)
        manifest_path = Path(url) / "runs" / target / "MANIFEST.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["n_valid_points"] = 99
        manifest_path.write_text(json.dumps(manifest))
    (Path(url) / signature_rel(target, key_id)).parent.mkdir(parents=True, exist_ok=True)
    (Path(url) / signature_rel(target, key_id)).write_text(json.dumps(doc))
    verdict = verify_run(store, target, load_trusted([keys["alice"][2]]))
    assert isinstance(verdict, str) and why in verdict


def test_a_private_key_others_can_read_is_refused_and_nothing_uploaded(tmp_path, keys):
    os.chmod(keys["alice"][1], 0o644)
    url = tmp_path / "store"
    res = _cli("upload", make_run(tmp_path / "runs", concurrencies=(1,)), "--to", url, "--sign", keys["alice"][1])
    assert res.exit_code == 2 and "readable by others (mode 0644)" in res.output
    assert not url.exists()


@pytest.mark.slow
def test_trust_takes_public_keys_only(tmp_path, keys, three_runs):
    url, _ = three_runs
    for path, why in ((keys["alice"][1], "a private key; give its public key"),
                       (tmp_path / "runs", "no *.pub file"),
                       (next((tmp_path / "runs").rglob("run.json")), "not a PEM public key")):
        res = _cli("costmodel", "query", "--store", url, "--trust", path)
        assert res.exit_code == 2 and why in res.output and "Traceback" not in res.output


def test_signing_again_writes_nothing_and_a_second_signer_adds_a_signature(store_url, tmp_path, keys):
    run = make_run(tmp_path / "runs", concurrencies=(1,))
    [first] = upload([run], store_url, signer=load_signer(keys["alice"][1]))
    store = Store(store_url)
    rel = signature_rel(first.run_id, keys["alice"][0])
    blob = store.get_bytes(rel)
    [again] = upload([run], store_url, signer=load_signer(keys["alice"][1]))
    assert again.status == "exists" and store.get_bytes(rel) == blob
    upload([run], store_url, signer=load_signer(keys["mallory"][1]))
    for name in ("alice", "mallory"):
        verdict = verify_run(store, first.run_id, load_trusted([keys[name][2]]))
        assert not isinstance(verdict, str) and verdict.key_id == keys[name][0]
        assert len(verdict.point_files) == 1


def test_trust_with_no_signed_run_is_one_line(tmp_path, keys):
    url = tmp_path / "store"
    upload([make_run(tmp_path / "runs", concurrencies=(1,))], str(url))
    res = _cli("compare", "--store", url, "--model", "tiny-llama", "--trust", keys["alice"][2])
    assert res.exit_code == 2 and "none of the 1 run(s) read is signed by a trusted key" in res.output


@pytest.mark.slow
@settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200) | st.builds(lambda k, v: json.dumps({k: v}).encode(), st.text(max_size=10),
                                                st.integers() | st.text(max_size=10) | st.none()))
def test_any_signature_file_is_a_reason_never_a_crash(keys, three_runs, data):
    """One store for every example: each overwrites the same signature file."""
    url, ids = three_runs
    rel = Path(url) / signature_rel(ids["h100-sxm"], keys["alice"][0])
    rel.write_bytes(data)
    verdict = verify_run(Store(url), ids["h100-sxm"], load_trusted([keys["alice"][2]]))
    assert isinstance(verdict, str) and "\n" not in verdict
