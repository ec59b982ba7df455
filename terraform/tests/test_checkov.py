"""checkov, offline (--skip-download), with the skips of terraform/.checkov.yaml, each of
which must say why. The whole tree is scanned once per session; the break-it tests scan a
small broken copy for one check id."""

import tfcheck


def test_checkov_passes(checkov_report):
    assert checkov_report["failed"] == [], "\n".join(map(str, checkov_report["failed"]))
    assert checkov_report["returncode"] == 0, checkov_report["stderr"][-2000:]
    # A scan that found nothing to check would pass too: make sure it looked at the tree.
    assert checkov_report["passed"] > 500


def test_every_skipped_check_is_justified(tree):
    skips = tfcheck.checkov_skips(tree)
    unjustified = [check for check, why in skips if len(why.split()) < 8]
    assert unjustified == [], f"skipped without a reason in {tfcheck.CHECKOV_CONFIG}: {unjustified}"


def test_unjustified_skip_is_reported(broken):
    broken.edit(".checkov.yaml", "  - CKV_AWS_91\n", "  - CKV_AWS_91\n  - CKV_AWS_79\n")
    skips = dict(tfcheck.checkov_skips(broken.root))
    assert skips["CKV_AWS_79"] == ""


def test_imdsv1_on_edges_fails_checkov(broken):
    broken.edit("modules/region/edge.tf", '    http_tokens                 = "required"\n', '    http_tokens                 = "optional"\n')
    report = tfcheck.run_checkov(broken.root, checks=["CKV_AWS_79"], directory=broken.root / "modules/region")
    assert report["returncode"] != 0
    assert [f for f in report["failed"] if f[0] == "CKV_AWS_79" and "aws_launch_template.edge" in f[1]], report["failed"]


def test_unencrypted_jetstream_volume_fails_checkov(broken):
    broken.edit("modules/nats-cluster/main.tf", "  encrypted         = true\n", "  encrypted         = false\n")
    report = tfcheck.run_checkov(broken.root, checks=["CKV_AWS_3"], directory=broken.root / "modules/nats-cluster")
    assert report["returncode"] != 0
    assert [f for f in report["failed"] if f[0] == "CKV_AWS_3" and "aws_ebs_volume.jetstream" in f[1]], report["failed"]


def test_ssh_open_to_the_internet_fails_checkov(broken):
    broken.append(
        "modules/hub/ingest.tf",
        '''
resource "aws_security_group" "debug_ssh" {
  name        = "debug-ssh"
  description = "debugging"
  vpc_id      = var.vpc_id

  ingress {
    description = "ssh"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
''',
    )
    report = tfcheck.run_checkov(broken.root, checks=["CKV_AWS_24"], directory=broken.root / "modules/hub")
    assert report["returncode"] != 0
    assert [f for f in report["failed"] if f[0] == "CKV_AWS_24" and "debug_ssh" in f[1]], report["failed"]
