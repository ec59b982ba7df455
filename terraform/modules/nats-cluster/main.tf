# A NATS cluster with one node per availability zone. Each node keeps its address (a fixed
# network interface), its name (a private DNS record) and its JetStream data (an EBS volume)
# when the instance itself is replaced, so a node roll is a restart, not a re-join.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  templates = "${path.module}/../../templates"

  # "us-east-1a" -> "a": the node's short name inside its cluster.
  node_letters = { for az in var.azs : az => substr(az, length(az) - 1, 1) }
  node_names   = { for az, l in local.node_letters : az => "nats-${l}.${var.domain}.${var.internal_zone_name}" }

  tls_dir   = "/etc/nats/tls"
  store_dir = "/var/lib/nats/jetstream"

  routes = [for az in var.azs : "nats-route://${local.node_names[az]}:${var.ports.cluster}"]

  # Inputs of the NATS server config of each node, kept apart so that the offline checks
  # in terraform/tests can render exactly what a node boots with.
  nats_conf_template = "${local.templates}/${var.role}.conf.tftpl"
  nats_conf_vars = {
    for az in var.azs : az => {
      server_name        = "${var.domain}-${local.node_letters[az]}"
      domain             = var.domain
      hub_domain         = var.hub_domain
      cluster_name       = var.domain
      client_port        = var.ports.client
      cluster_port       = var.ports.cluster
      leafnode_port      = var.ports.leafnode
      monitor_port       = var.ports.monitoring
      routes             = local.routes
      hub_leaf_urls      = var.hub_leaf_urls
      leaf_identity      = var.leaf_identity
      tls_dir            = local.tls_dir
      store_dir          = local.store_dir
      max_file_store     = var.max_file_store
      max_memory_store   = var.max_memory_store
      lame_duck_duration = var.lame_duck_duration
    }
  }

  artifact_prefix = "s3://${var.artifact_bucket}/nats/${var.nats_server_version}/${var.architecture}"

  password_env = { for user, arn in var.password_secret_arns : "${upper(user)}_PASSWORD" => arn }
}

module "role" {
  source = "../instance-role"

  name                 = var.name
  artifact_object_arns = ["arn:${data.aws_partition.current.partition}:s3:::${var.artifact_bucket}/nats/*"]
  secret_arns          = concat([var.tls_secret_arn], values(var.password_secret_arns))
  kms_key_arns         = var.secrets_kms_key_arns
  tags                 = var.tags
}

resource "aws_network_interface" "node" {
  for_each = toset(var.azs)

  subnet_id       = var.subnet_ids[each.key]
  security_groups = [aws_security_group.nats.id]
  description     = "${var.name} node in ${each.key}"

  tags = merge(var.tags, { Name = "${var.name}-${local.node_letters[each.key]}" })
}

resource "aws_route53_record" "node" {
  for_each = toset(var.azs)

  zone_id = var.internal_zone_id
  name    = local.node_names[each.key]
  type    = "A"
  ttl     = 60
  records = [aws_instance.node[each.key].private_ip]
}

resource "aws_ebs_volume" "jetstream" {
  for_each = toset(var.azs)

  availability_zone = each.key
  type              = "gp3"
  size              = var.data_volume_size_gb
  iops              = var.data_volume_iops
  throughput        = var.data_volume_throughput
  encrypted         = true
  kms_key_id        = aws_kms_key.ebs.arn

  tags = merge(var.tags, { Name = "${var.name}-${local.node_letters[each.key]}-jetstream" })
}

resource "aws_instance" "node" {
  for_each = toset(var.azs)

  ami                  = var.ami_id
  instance_type        = var.instance_type
  iam_instance_profile = module.role.instance_profile_name
  ebs_optimized        = true
  monitoring           = true

  network_interface {
    network_interface_id = aws_network_interface.node[each.key].id
    device_index         = 0
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = 20
    encrypted   = true
    kms_key_id  = aws_kms_key.ebs.arn
  }

  user_data = templatefile("${local.templates}/bootstrap.sh.tftpl", {
    role                = "nats-${var.role}"
    service_user        = "nats"
    tls_secret_arn      = var.tls_secret_arn
    tls_dir             = local.tls_dir
    env_file            = "/etc/nats/nats.env"
    env_secrets         = local.password_env
    env_plain           = {}
    file_secrets        = {}
    nats_password_files = {}
    data_volume_id      = aws_ebs_volume.jetstream[each.key].id
    data_dir            = "/var/lib/nats"
    artifacts = {
      "/opt/tickmesh/bin/nats-server" = "${local.artifact_prefix}/nats-server"
      "/opt/tickmesh/bin/nats"        = "${local.artifact_prefix}/nats"
    }
    files = merge(
      {
        "/etc/nats/nats.conf" = base64encode(templatefile(local.nats_conf_template, local.nats_conf_vars[each.key]))
        "/etc/systemd/system/nats-server.service" = base64encode(templatefile("${local.templates}/systemd/nats-server.service.tftpl", {
          env_file = "/etc/nats/nats.env"
          data_dir = "/var/lib/nats"
        }))
      },
      var.role == "leaf" ? {
        "/opt/tickmesh/bin/ensure-kv-mirror" = base64encode(templatefile("${local.templates}/ensure-kv-mirror.sh.tftpl", {
          server_url = "tls://${local.node_names[each.key]}:${var.ports.client}"
          tls_dir    = local.tls_dir
          domain     = var.domain
          hub_domain = var.hub_domain
          replicas   = length(var.azs)
          # The mirror of the revocation bucket keeps each entry as long as the hub does.
          revocation_ttl_s = var.revocation_ttl_s
        }))
        "/etc/systemd/system/tickmesh-kv-mirror.service" = base64encode(templatefile("${local.templates}/systemd/tickmesh-kv-mirror.service.tftpl", {
          env_file = "/etc/nats/nats.env"
        }))
      } : {}
    )
    units = var.role == "leaf" ? ["nats-server.service", "tickmesh-kv-mirror.service"] : ["nats-server.service"]
    sysctls = {
      "net.core.somaxconn"           = 4096
      "net.ipv4.tcp_max_syn_backlog" = 8192
    }
  })

  # A changed AMI, instance type or config must not restart every node of the quorum in
  # one apply: nodes are rolled one at a time with `terraform apply -replace` (docs/deploy.md).
  lifecycle {
    ignore_changes = [ami, instance_type, user_data]
  }

  tags = merge(var.tags, { Name = "${var.name}-${local.node_letters[each.key]}", "tickmesh:role" = "nats-${var.role}" })
}

resource "aws_volume_attachment" "jetstream" {
  for_each = toset(var.azs)

  device_name                    = "/dev/sdf"
  volume_id                      = aws_ebs_volume.jetstream[each.key].id
  instance_id                    = aws_instance.node[each.key].id
  stop_instance_before_detaching = true
}

# One customer managed key per cluster for its volumes.
resource "aws_kms_key" "ebs" {
  description             = "${var.name} EBS volumes"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  # Key policy: the account administers and uses the key through IAM ("*" is this key).
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdministration"
      Effect    = "Allow"
      Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })

  tags = var.tags
}

resource "aws_kms_alias" "ebs" {
  name          = "alias/${var.name}-ebs"
  target_key_id = aws_kms_key.ebs.key_id
}
