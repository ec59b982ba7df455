variable "name" {
  description = "Name prefix of the hub's resources."
  type        = string
  default     = "tickmesh-hub"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3-24 characters of lower-case letters, digits and dashes (load balancer names are short)."
  }
}

variable "domain" {
  description = "JetStream domain of the hub."
  type        = string
  default     = "hub"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*$", var.domain))
    error_message = "domain must be lower-case letters, digits and dashes."
  }
}

variable "vpc_id" {
  description = "VPC of the hub."
  type        = string
}

variable "azs" {
  description = "Availability zones of the hub: one NATS node in each (3 or 5)."
  type        = list(string)

  validation {
    condition     = contains([3, 5], length(var.azs))
    error_message = "The hub needs 3 or 5 availability zones: one NATS node per zone, an odd count for the Raft quorum."
  }
}

variable "private_subnet_ids" {
  description = "Private subnet ID per availability zone."
  type        = map(string)
}

variable "ami_id" {
  description = "Amazon Linux 2023 AMI for the NATS and ingest instances."
  type        = string
}

variable "architecture" {
  description = "CPU architecture of the instances and of the release binaries."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "nats_instance_type" {
  description = "Instance type of the hub's NATS nodes."
  type        = string
  default     = "c7g.xlarge"
}

variable "data_volume_size_gb" {
  description = "Size of each hub node's JetStream volume, in GiB."
  type        = number
  default     = 200
}

variable "max_file_store" {
  description = "JetStream max_file_store of each hub node (e.g. 150GB); keep it below the volume size."
  type        = string
  default     = "150GB"
}

variable "internal_zone_id" {
  description = "Route 53 private hosted zone of the deployment, associated with every TickMesh VPC."
  type        = string
}

variable "internal_zone_name" {
  description = "Name of that zone, e.g. tickmesh.internal."
  type        = string
}

variable "tls_secret_arn" {
  description = "Secrets Manager secret (JSON: ca, cert, key) with the hub's TLS material; the certificate must name *.<domain>.<zone> and leaf.<domain>.<zone>."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", var.tls_secret_arn))
    error_message = "tls_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "ingest_password_secret_arn" {
  description = "Secrets Manager secret holding the NATS password of user ingest."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", var.ingest_password_secret_arn))
    error_message = "ingest_password_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "oms_password_secret_arn" {
  description = "Secrets Manager secret holding the NATS password of user oms (the order system, the single writer of the account stream acct)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", var.oms_password_secret_arn))
    error_message = "oms_password_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "oms_client_security_group_ids" {
  description = "Security groups of the order system's hosts, allowed to reach the hub's client port, keyed by a static name (e.g. { oms = sg-... }). Empty: no order system connects yet."
  type        = map(string)
  default     = {}
}

variable "admin_password_secret_arn" {
  description = "Secrets Manager secret holding the NATS password of user admin."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", var.admin_password_secret_arn))
    error_message = "admin_password_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "secrets_kms_key_arns" {
  description = "Customer managed KMS keys that encrypt the secrets, if any."
  type        = list(string)
  default     = []
}

variable "leaf_identity" {
  description = "DNS name in every leaf cluster's certificate that the hub maps to the leaf user."
  type        = string
  default     = "leaf.tickmesh.internal"
}

variable "leaf_source_cidr_blocks" {
  description = "CIDRs of the regional VPCs whose leaf clusters dial the hub. Private ranges only: the leaf-node listener is never on the internet."
  type        = list(string)

  validation {
    condition = length(var.leaf_source_cidr_blocks) > 0 && alltrue([
      for c in var.leaf_source_cidr_blocks :
      can(cidrhost(c, 0)) && can(regex("^(10\\.|172\\.(1[6-9]|2[0-9]|3[01])\\.|192\\.168\\.)", c))
    ])
    error_message = "leaf_source_cidr_blocks must be private (RFC 1918) CIDRs."
  }
}

variable "monitoring_cidr_blocks" {
  description = "Private CIDRs allowed to scrape the NATS monitoring port."
  type        = list(string)
  default     = []
}

variable "artifact_bucket" {
  description = "S3 bucket with the release artifacts: tickmesh/<version>/<architecture>/tickmesh-ingest and nats/<version>/<architecture>/{nats-server,nats}."
  type        = string
}

variable "release_version" {
  description = "TickMesh release to run (artifact folder name)."
  type        = string

  validation {
    condition     = can(regex("^[0-9A-Za-z][0-9A-Za-z._-]*$", var.release_version))
    error_message = "release_version must be a plain version string such as 1.4.0."
  }
}

variable "nats_server_version" {
  description = "nats-server version to install."
  type        = string
  default     = "2.15.1"
}

variable "ingest_count" {
  description = "Number of ingest instances. One holds the lease and publishes; the others stand by."
  type        = number
  default     = 2

  validation {
    condition     = var.ingest_count >= 1 && var.ingest_count <= 5
    error_message = "ingest_count must be between 1 and 5."
  }
}

variable "ingest_instance_type" {
  description = "Instance type of the ingest instances."
  type        = string
  default     = "c7g.large"
}

variable "ingest_metrics_port" {
  description = "Port of ingest's Prometheus endpoint, open to monitoring_cidr_blocks."
  type        = number
  default     = 9464

  validation {
    condition     = var.ingest_metrics_port > 1024 && var.ingest_metrics_port < 65536
    error_message = "ingest_metrics_port must be an unprivileged port."
  }
}

variable "ingest_source" {
  description = "Feed ingest publishes: sim (the market simulator) or replay (recorded files)."
  type        = string
  default     = "sim"

  validation {
    condition     = contains(["sim", "replay"], var.ingest_source)
    error_message = "ingest_source must be sim or replay."
  }
}

variable "ingest_extra_toml" {
  description = "Extra TOML tables appended to ingest.toml (e.g. [sim], [replay], [lease]); tables only, since it comes after [kv]."
  type        = string
  default     = ""
}

variable "ingest_egress" {
  description = "Extra egress of the ingest instances (exchange feeds), as CIDR and TCP port."
  type = list(object({
    description = string
    cidr_block  = string
    port        = number
  }))
  default = []
}

variable "shards" {
  description = "Deployment-wide shard count of tick subjects (md.<shard>.<symbol>). Must be the same everywhere."
  type        = number
  default     = 64

  validation {
    condition     = var.shards >= 1 && var.shards <= 4096 && floor(var.shards) == var.shards
    error_message = "shards must be an integer between 1 and 4096."
  }
}

variable "kv_min_interval_ms" {
  description = "Minimum interval between two md_last writes of one symbol, in ms."
  type        = number
  default     = 250

  validation {
    condition     = var.kv_min_interval_ms >= 50 && var.kv_min_interval_ms <= 10000
    error_message = "kv_min_interval_ms must be between 50 and 10000."
  }
}

variable "deletion_protection" {
  description = "Protect the leaf-node load balancer from deletion."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
