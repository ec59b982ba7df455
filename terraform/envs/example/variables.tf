variable "environment" {
  description = "Name of this deployment, used in tags."
  type        = string
  default     = "example"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.environment))
    error_message = "environment must be 2-21 lower-case letters, digits and dashes."
  }
}

variable "public_zone_name" {
  description = "Existing public Route 53 hosted zone, e.g. example.com."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.public_zone_name))
    error_message = "public_zone_name must be a DNS name without a trailing dot."
  }
}

variable "record_name" {
  description = "Client-facing name inside that zone, e.g. stream.example.com."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.record_name))
    error_message = "record_name must be a DNS name without a trailing dot."
  }
}

variable "internal_zone_name" {
  description = "Private DNS zone that names the NATS nodes in every VPC."
  type        = string
  default     = "tickmesh.internal"

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z0-9-]+$", var.internal_zone_name))
    error_message = "internal_zone_name must be a DNS name without a trailing dot."
  }
}

variable "artifact_bucket" {
  description = "S3 bucket with the release artifacts (tickmesh/<version>/<arch>/tickmesh-{ingest,edge}, nats/<version>/<arch>/{nats-server,nats})."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.artifact_bucket))
    error_message = "artifact_bucket must be an S3 bucket name."
  }
}

variable "release_version" {
  description = "TickMesh release that ingest and the edges run."
  type        = string

  validation {
    condition     = can(regex("^[0-9A-Za-z][0-9A-Za-z._-]*$", var.release_version))
    error_message = "release_version must be a plain version string such as 1.4.0."
  }
}

variable "edge_release_overrides" {
  description = "Per region, per availability zone edge release, for rolling one zone at a time: { \"eu-west-1\" = { \"eu-west-1a\" = \"1.5.0\" } }."
  type        = map(map(string))
  default     = {}

  validation {
    condition     = alltrue([for r in keys(var.edge_release_overrides) : contains(["us-east-1", "eu-west-1", "ap-northeast-1"], r)])
    error_message = "edge_release_overrides keys must be regions of this environment."
  }
}

variable "nats_server_version" {
  description = "nats-server version of every NATS node."
  type        = string
  default     = "2.15.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.nats_server_version))
    error_message = "nats_server_version must be a semantic version such as 2.15.1."
  }
}

variable "secrets" {
  description = "Secrets Manager ARNs. TLS secrets are JSON with PEM fields ca, cert, key; passwords and the JWT key are plain strings. No secret value ever goes through Terraform."
  type = object({
    hub_tls         = string
    leaf_tls        = map(string)
    edge_tls        = map(string)
    ingest_password = string
    oms_password    = string
    edge_password   = string
    admin_password  = string
    jwt_key         = string
  })

  validation {
    condition = alltrue([
      for arn in concat(
        [var.secrets.hub_tls, var.secrets.ingest_password, var.secrets.oms_password, var.secrets.edge_password, var.secrets.admin_password, var.secrets.jwt_key],
        values(var.secrets.leaf_tls),
        values(var.secrets.edge_tls),
      ) : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", arn))
    ])
    error_message = "Every entry of secrets must be a Secrets Manager secret ARN."
  }

  validation {
    condition = alltrue([
      for r in ["us-east-1", "eu-west-1", "ap-northeast-1"] : contains(keys(var.secrets.leaf_tls), r) && contains(keys(var.secrets.edge_tls), r)
    ])
    error_message = "secrets.leaf_tls and secrets.edge_tls need an entry for every region."
  }
}

variable "jwt_audience" {
  description = "The aud claim of client tokens (the identity provider's audience for TickMesh)."
  type        = string
}

variable "jwt_issuer" {
  description = "The iss claim of client tokens: the identity provider."
  type        = string
}

variable "jwt_max_token_lifetime_s" {
  description = "Longest a client token may live (exp - iat), in seconds."
  type        = number
  default     = 3600
}

variable "secrets_kms_key_arns" {
  description = "Customer managed KMS keys that encrypt the secrets, if any."
  type        = list(string)
  default     = []
}

variable "edge_certificate_arns" {
  description = "ACM certificate for record_name in each region (ACM certificates are regional)."
  type        = map(string)

  validation {
    condition = alltrue([
      for r in ["us-east-1", "eu-west-1", "ap-northeast-1"] :
      can(regex("^arn:aws[a-z-]*:acm:${r}:[0-9]{12}:certificate/", lookup(var.edge_certificate_arns, r, "")))
    ])
    error_message = "edge_certificate_arns needs an ACM certificate ARN of the same region for us-east-1, eu-west-1 and ap-northeast-1."
  }
}

variable "edge_capacity" {
  description = "Size of each availability zone's edge group, per region."
  type = map(object({
    min     = number
    max     = number
    desired = number
  }))
  default = {
    "us-east-1"      = { min = 2, max = 12, desired = 3 }
    "eu-west-1"      = { min = 2, max = 10, desired = 2 }
    "ap-northeast-1" = { min = 1, max = 6, desired = 1 }
  }

  validation {
    condition     = alltrue([for c in values(var.edge_capacity) : c.min >= 1 && c.min <= c.desired && c.desired <= c.max])
    error_message = "Every edge_capacity entry needs 1 <= min <= desired <= max."
  }
}

variable "monitoring_cidr_blocks" {
  description = "Private CIDRs of the monitoring system (Prometheus) that scrapes NATS, ingest and edges."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.monitoring_cidr_blocks : can(cidrhost(c, 0)) && !contains(["0.0.0.0/0", "::/0"], c)])
    error_message = "monitoring_cidr_blocks must be valid CIDRs and never the whole internet."
  }
}

variable "ingest_extra_toml" {
  description = "Feed configuration appended to ingest.toml."
  type        = string
  default     = ""
}
