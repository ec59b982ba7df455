# A TickMesh region: a NATS leaf cluster with its own JetStream domain (and a read-only
# mirror of md_last), and per availability zone an Auto Scaling group of edge gateways,
# all behind one public NLB that health-checks /readyz.

data "aws_partition" "current" {}

locals {
  name       = "tickmesh-${var.domain}"
  nats_ports = { client = 4222, cluster = 6222, leafnode = 7422, monitoring = 8222 }
  templates  = "${path.module}/../../templates"
}

module "leaf" {
  source = "../nats-cluster"

  name                = local.name
  role                = "leaf"
  domain              = var.domain
  hub_domain          = var.hub_domain
  vpc_id              = var.vpc_id
  azs                 = slice(var.azs, 0, 3)
  subnet_ids          = var.private_subnet_ids
  instance_type       = var.nats_instance_type
  ami_id              = var.ami_id
  architecture        = var.architecture
  data_volume_size_gb = var.nats_data_volume_size_gb
  max_file_store      = var.nats_max_file_store
  ports               = local.nats_ports
  internal_zone_id    = var.internal_zone_id
  internal_zone_name  = var.internal_zone_name
  tls_secret_arn      = var.leaf_tls_secret_arn
  password_secret_arns = {
    edge  = var.edge_password_secret_arn
    admin = var.admin_password_secret_arn
  }
  secrets_kms_key_arns = var.secrets_kms_key_arns
  leaf_identity        = var.leaf_identity
  hub_leaf_urls        = var.hub_leaf_urls
  hub_cidr_blocks      = var.hub_cidr_blocks

  client_source_security_group_ids = { edge = aws_security_group.edge.id }
  monitoring_cidr_blocks           = var.monitoring_cidr_blocks

  artifact_bucket     = var.artifact_bucket
  nats_server_version = var.nats_server_version
  tags                = var.tags
}
