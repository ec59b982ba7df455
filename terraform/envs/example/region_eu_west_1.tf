# Region eu-west-1: its VPC (peered with the hub's), its leaf cluster and its edges.

data "aws_ssm_parameter" "ami_eu_west_1" {
  provider = aws.eu_west_1
  name     = local.ami_parameter
}

module "network_eu_west_1" {
  source    = "../../modules/network"
  providers = { aws = aws.eu_west_1 }

  name       = "tickmesh-eu-west-1"
  cidr_block = local.regions["eu-west-1"].cidr_block
  azs        = local.regions["eu-west-1"].azs
}

module "peering_eu_west_1" {
  source = "../../modules/peering"
  providers = {
    aws.requester = aws.hub
    aws.accepter  = aws.eu_west_1
  }

  name                      = "hub-eu-west-1"
  requester_vpc_id          = module.hub_network.vpc_id
  requester_cidr_block      = local.hub.cidr_block
  requester_route_table_ids = module.hub_network.private_route_table_ids
  accepter_vpc_id           = module.network_eu_west_1.vpc_id
  accepter_cidr_block       = local.regions["eu-west-1"].cidr_block
  accepter_region           = "eu-west-1"
  accepter_route_table_ids  = module.network_eu_west_1.private_route_table_ids
}

resource "aws_route53_zone_association" "eu_west_1" {
  provider = aws.hub

  zone_id    = aws_route53_zone.internal.zone_id
  vpc_id     = module.network_eu_west_1.vpc_id
  vpc_region = "eu-west-1"
}

module "region_eu_west_1" {
  source    = "../../modules/region"
  providers = { aws = aws.eu_west_1 }

  domain             = "eu-west-1"
  vpc_id             = module.network_eu_west_1.vpc_id
  azs                = local.regions["eu-west-1"].azs
  private_subnet_ids = module.network_eu_west_1.private_subnet_ids
  public_subnet_ids  = module.network_eu_west_1.public_subnet_ids
  ami_id             = data.aws_ssm_parameter.ami_eu_west_1.insecure_value

  internal_zone_id   = aws_route53_zone.internal.zone_id
  internal_zone_name = var.internal_zone_name
  hub_leaf_urls      = module.hub.leaf_urls
  hub_cidr_blocks    = [local.hub.cidr_block]

  leaf_tls_secret_arn       = var.secrets.leaf_tls["eu-west-1"]
  edge_tls_secret_arn       = var.secrets.edge_tls["eu-west-1"]
  edge_password_secret_arn  = var.secrets.edge_password
  admin_password_secret_arn = var.secrets.admin_password
  jwt_key_secret_arn        = var.secrets.jwt_key
  jwt_audience              = var.jwt_audience
  jwt_issuer                = var.jwt_issuer
  jwt_max_token_lifetime_s  = var.jwt_max_token_lifetime_s
  secrets_kms_key_arns      = var.secrets_kms_key_arns

  edge_tls_termination = "nlb"
  edge_certificate_arn = var.edge_certificate_arns["eu-west-1"]
  edge_capacity        = var.edge_capacity["eu-west-1"]

  artifact_bucket           = var.artifact_bucket
  release_version           = var.release_version
  release_version_overrides = lookup(var.edge_release_overrides, "eu-west-1", {})
  nats_server_version       = var.nats_server_version
  shards                    = local.shards
  monitoring_cidr_blocks    = var.monitoring_cidr_blocks

  # The leaf cluster dials the hub through the peering.
  depends_on = [module.peering_eu_west_1, aws_route53_zone_association.eu_west_1]
}
