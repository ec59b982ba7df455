# Ingest: normalize feeds, sequence per symbol, publish md.<shard>.<symbol> and write the
# md_last / md_ref buckets. Several instances run; only the lease holder publishes.

locals {
  ingest_conf_template = "${path.module}/../../templates/ingest.toml.tftpl"
  # Keyed like every *_conf_vars local (by instance group); ingest has one group.
  ingest_conf_vars = {
    ingest = {
      nats_urls          = module.nats.client_urls
      nats_ca_file       = "${local.ingest_tls_dir}/ca.pem"
      nats_password_file = local.ingest_nats_password_file
      shards             = var.shards
      source             = var.ingest_source
      kv_min_interval_ms = var.kv_min_interval_ms
      kv_replicas        = length(var.azs)
      metrics_port       = var.ingest_metrics_port
      extra_toml         = var.ingest_extra_toml
    }
  }
  release_prefix = "s3://${var.artifact_bucket}/tickmesh/${var.release_version}/${var.architecture}"
  ingest_tls_dir = "/etc/tickmesh/tls"

  # The ingest user's NATS password, written at boot from Secrets Manager ([nats.auth] password_file).
  ingest_nats_password_file = "/etc/tickmesh/nats-ingest.password"
}

module "ingest_role" {
  source = "../instance-role"

  name                 = "${var.name}-ingest"
  artifact_object_arns = ["arn:${data.aws_partition.current.partition}:s3:::${var.artifact_bucket}/tickmesh/*"]
  secret_arns          = [var.tls_secret_arn, var.ingest_password_secret_arn]
  kms_key_arns         = var.secrets_kms_key_arns
  tags                 = var.tags
}

resource "aws_security_group" "ingest" {
  name_prefix = "${var.name}-ingest-"
  description = "TickMesh ingest instances"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-ingest" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "ingest_nats" {
  security_group_id            = aws_security_group.ingest.id
  description                  = "NATS client connections to the hub nodes (TLS)"
  ip_protocol                  = "tcp"
  from_port                    = local.ports.client
  to_port                      = local.ports.client
  referenced_security_group_id = module.nats.security_group_id
}

resource "aws_vpc_security_group_egress_rule" "ingest_https" {
  security_group_id = aws_security_group.ingest.id
  description       = "HTTPS to AWS APIs, release artifacts and package repositories"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "ingest_feeds" {
  for_each = { for e in var.ingest_egress : "${e.cidr_block}:${e.port}" => e }

  security_group_id = aws_security_group.ingest.id
  description       = each.value.description
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr_block
}

resource "aws_vpc_security_group_ingress_rule" "ingest_metrics" {
  for_each = toset(var.monitoring_cidr_blocks)

  security_group_id = aws_security_group.ingest.id
  description       = "Prometheus scrapes of ingest"
  ip_protocol       = "tcp"
  from_port         = var.ingest_metrics_port
  to_port           = var.ingest_metrics_port
  cidr_ipv4         = each.value
}

resource "aws_launch_template" "ingest" {
  name_prefix   = "${var.name}-ingest-"
  image_id      = var.ami_id
  instance_type = var.ingest_instance_type
  ebs_optimized = true

  iam_instance_profile {
    name = module.ingest_role.instance_profile_name
  }

  vpc_security_group_ids = [aws_security_group.ingest.id]

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_type           = "gp3"
      volume_size           = 20
      encrypted             = true
      delete_on_termination = true
    }
  }

  user_data = base64encode(templatefile("${path.module}/../../templates/bootstrap.sh.tftpl", {
    role                = "ingest"
    service_user        = "tickmesh"
    tls_secret_arn      = var.tls_secret_arn
    tls_dir             = local.ingest_tls_dir
    env_file            = "/etc/tickmesh/ingest.env"
    env_secrets         = {}
    env_plain           = {}
    file_secrets        = {}
    nats_password_files = { "${local.ingest_nats_password_file}" = var.ingest_password_secret_arn }
    data_volume_id      = ""
    data_dir            = ""
    artifacts           = { "/opt/tickmesh/bin/tickmesh-ingest" = "${local.release_prefix}/tickmesh-ingest" }
    files = {
      "/etc/tickmesh/ingest.toml" = base64encode(templatefile(local.ingest_conf_template, local.ingest_conf_vars.ingest))
      "/etc/systemd/system/tickmesh-ingest.service" = base64encode(templatefile("${path.module}/../../templates/systemd/tickmesh-service.service.tftpl", {
        service        = "ingest"
        env_file       = "/etc/tickmesh/ingest.env"
        stop_timeout_s = 30
      }))
    }
    units   = ["tickmesh-ingest.service"]
    sysctls = { "net.core.somaxconn" = 4096 }
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-ingest", "tickmesh:role" = "ingest" })
  }

  tags = var.tags
}

resource "aws_autoscaling_group" "ingest" {
  name_prefix         = "${var.name}-ingest-"
  vpc_zone_identifier = [for az in var.azs : var.private_subnet_ids[az]]
  min_size            = var.ingest_count
  max_size            = var.ingest_count
  desired_capacity    = var.ingest_count
  health_check_type   = "EC2"

  launch_template {
    id      = aws_launch_template.ingest.id
    version = aws_launch_template.ingest.latest_version
  }

  # One instance at a time: the standby takes the lease while the old holder stops.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = var.ingest_count > 1 ? 50 : 0
      instance_warmup        = 60
    }
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = "${var.name}-ingest", "tickmesh:role" = "ingest" })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
