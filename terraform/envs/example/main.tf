# Example TickMesh deployment: the hub in us-east-1 and three regions (us-east-1, eu-west-1,
# ap-northeast-1), each region in its own VPC peered with the hub's. Each region lives in
# its own region_*.tf file; adding a region is adding one such file (see docs/deploy.md).

locals {
  tags = {
    Project     = "tickmesh"
    Environment = var.environment
    ManagedBy   = "terraform"
  }

  hub = {
    aws_region = "us-east-1"
    cidr_block = "10.0.0.0/16"
    azs        = ["us-east-1a", "us-east-1b", "us-east-1c"]
  }

  # VPC CIDRs must not overlap: every region peers with the hub.
  regions = {
    "us-east-1"      = { cidr_block = "10.1.0.0/16", azs = ["us-east-1a", "us-east-1b", "us-east-1c"] }
    "eu-west-1"      = { cidr_block = "10.2.0.0/16", azs = ["eu-west-1a", "eu-west-1b", "eu-west-1c"] }
    "ap-northeast-1" = { cidr_block = "10.3.0.0/16", azs = ["ap-northeast-1a", "ap-northeast-1c", "ap-northeast-1d"] }
  }

  ami_parameter = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
  shards        = 64
}

# ---------------------------------------------------------------------------------------
# Hub
# ---------------------------------------------------------------------------------------

data "aws_ssm_parameter" "ami_hub" {
  provider = aws.hub
  name     = local.ami_parameter
}

module "hub_network" {
  source    = "../../modules/network"
  providers = { aws = aws.hub }

  name       = "tickmesh-hub"
  cidr_block = local.hub.cidr_block
  azs        = local.hub.azs
}

# Names of the NATS nodes; associated with every regional VPC in region_*.tf.
resource "aws_route53_zone" "internal" {
  provider = aws.hub

  name    = var.internal_zone_name
  comment = "TickMesh NATS node names"

  vpc {
    vpc_id     = module.hub_network.vpc_id
    vpc_region = local.hub.aws_region
  }

  # Further VPCs are attached with aws_route53_zone_association.
  lifecycle {
    ignore_changes = [vpc]
  }
}

module "hub" {
  source    = "../../modules/hub"
  providers = { aws = aws.hub }

  vpc_id             = module.hub_network.vpc_id
  azs                = local.hub.azs
  private_subnet_ids = module.hub_network.private_subnet_ids
  ami_id             = data.aws_ssm_parameter.ami_hub.insecure_value

  internal_zone_id   = aws_route53_zone.internal.zone_id
  internal_zone_name = var.internal_zone_name

  tls_secret_arn             = var.secrets.hub_tls
  ingest_password_secret_arn = var.secrets.ingest_password
  oms_password_secret_arn    = var.secrets.oms_password
  admin_password_secret_arn  = var.secrets.admin_password
  secrets_kms_key_arns       = var.secrets_kms_key_arns

  leaf_source_cidr_blocks = [for r in local.regions : r.cidr_block]
  monitoring_cidr_blocks  = var.monitoring_cidr_blocks

  artifact_bucket     = var.artifact_bucket
  release_version     = var.release_version
  nats_server_version = var.nats_server_version
  shards              = local.shards
  ingest_extra_toml   = var.ingest_extra_toml
}

# ---------------------------------------------------------------------------------------
# Global entry: latency-based records over the regions' edge NLBs.
# ---------------------------------------------------------------------------------------

data "aws_route53_zone" "public" {
  name         = var.public_zone_name
  private_zone = false
}

module "global" {
  source = "../../modules/global"

  zone_id     = data.aws_route53_zone.public.zone_id
  record_name = var.record_name

  regions = {
    "us-east-1" = {
      aws_region   = "us-east-1"
      nlb_dns_name = module.region_us_east_1.nlb_dns_name
      nlb_zone_id  = module.region_us_east_1.nlb_zone_id
    }
    "eu-west-1" = {
      aws_region   = "eu-west-1"
      nlb_dns_name = module.region_eu_west_1.nlb_dns_name
      nlb_zone_id  = module.region_eu_west_1.nlb_zone_id
    }
    "ap-northeast-1" = {
      aws_region   = "ap-northeast-1"
      nlb_dns_name = module.region_ap_northeast_1.nlb_dns_name
      nlb_zone_id  = module.region_ap_northeast_1.nlb_zone_id
    }
  }
}
