"""Every Terraform file parses with python-hcl2; every template is well formed."""

import tfcheck


def test_every_file_parses(tree):
    files = tfcheck.hcl_files(tree)
    assert len(files) >= 30, f"expected the modules and the example environment, found {len(files)} files"
    assert tfcheck.parse_problems(tree) == []


def test_syntax_error_in_a_module_is_reported(broken):
    broken.append("modules/hub/main.tf", '\nresource "aws_instance" "unfinished" {\n  ami = "ami-1"\n')
    problems = tfcheck.parse_problems(broken.root)
    assert any(p.startswith("modules/hub/main.tf:") for p in problems), problems


def test_syntax_error_in_tfvars_is_reported(broken):
    broken.edit("envs/example/terraform.tfvars.example", 'release_version  = "1.0.0"', 'release_version  = "1.0.0')
    problems = tfcheck.parse_problems(broken.root)
    assert any("terraform.tfvars.example" in p for p in problems), problems


def test_unterminated_template_directive_is_reported(broken):
    broken.edit("templates/leaf.conf.tftpl", "%{ endfor ~}\n      ]", "      ]")
    problems = tfcheck.parse_problems(broken.root)
    assert any("templates/leaf.conf.tftpl" in p and "unterminated" in p for p in problems), problems


def test_invalid_checkov_config_is_reported(broken):
    broken.append(".checkov.yaml", "skip-check: [unbalanced\n")
    problems = tfcheck.parse_problems(broken.root)
    assert any(".checkov.yaml" in p for p in problems), problems


def test_every_variable_has_a_type_and_a_description(tree):
    import hcl2

    missing = []
    for path in tfcheck.hcl_files(tree):
        if path.suffix != ".tf":
            continue
        for block in hcl2.loads(path.read_text()).get("variable", []):
            for name, body in block.items():
                for field in ("type", "description"):
                    if field not in body:
                        missing.append(f"{path.relative_to(tree)}: variable {name} has no {field}")
    assert missing == []


def test_no_private_key_material_is_committed(tree):
    offenders = [
        str(p.relative_to(tree))
        for p in tree.rglob("*")
        if p.is_file() and "tests" not in p.relative_to(tree).parts and "PRIVATE KEY-----" in p.read_text(errors="ignore")
    ]
    assert offenders == []
