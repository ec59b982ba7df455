variable "name" {
  description = "Name prefix of this cluster's resources, e.g. tickmesh-hub."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and dashes."
  }
}

variable "role" {
  description = "hub: the central cluster with the leaf-node listener; leaf: a regional cluster that dials the hub."
  type        = string

  validation {
    condition     = contains(["hub", "leaf"], var.role)
    error_message = "role must be \"hub\" or \"leaf\"."
  }
}

variable "domain" {
  description = "JetStream domain of the cluster (\"hub\" for the hub, the region name for a leaf cluster). Also the NATS cluster name and the DNS label of its nodes."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.domain))
    error_message = "domain must be lower-case letters, digits and dashes (it becomes a subject token and a DNS label)."
  }
}

variable "hub_domain" {
  description = "JetStream domain of the hub, which leaf clusters mirror md_last from."
  type        = string
  default     = "hub"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*$", var.hub_domain))
    error_message = "hub_domain must be lower-case letters, digits and dashes."
  }
}

variable "vpc_id" {
  description = "VPC to run the cluster in."
  type        = string
}

variable "azs" {
  description = "One node is placed in each of these availability zones. An odd count keeps JetStream's Raft quorum through the loss of a zone."
  type        = list(string)

  validation {
    condition     = contains([3, 5], length(var.azs)) && length(distinct(var.azs)) == length(var.azs)
    error_message = "azs must list 3 or 5 distinct availability zones (JetStream R3 needs an odd-sized cluster)."
  }
}

variable "subnet_ids" {
  description = "Private subnet ID per availability zone; must have a key for every entry of azs."
  type        = map(string)
}

variable "instance_type" {
  description = "EC2 instance type of the NATS nodes."
  type        = string
  default     = "c7g.xlarge"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like an EC2 instance type, e.g. c7g.xlarge."
  }
}

variable "ami_id" {
  description = "AMI of the nodes (Amazon Linux 2023 of the matching architecture). Changing it does not replace running nodes: roll them one at a time (see docs/deploy.md)."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be an AMI ID."
  }
}

variable "architecture" {
  description = "CPU architecture of the nodes; selects the nats-server build downloaded at boot."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "data_volume_size_gb" {
  description = "Size of each node's JetStream EBS volume, in GiB."
  type        = number
  default     = 200

  validation {
    condition     = var.data_volume_size_gb >= 20 && var.data_volume_size_gb <= 16384
    error_message = "data_volume_size_gb must be between 20 and 16384."
  }
}

variable "data_volume_iops" {
  description = "Provisioned IOPS of each gp3 JetStream volume."
  type        = number
  default     = 6000

  validation {
    condition     = var.data_volume_iops >= 3000 && var.data_volume_iops <= 16000
    error_message = "data_volume_iops must be between 3000 and 16000 (gp3)."
  }
}

variable "data_volume_throughput" {
  description = "Provisioned throughput of each gp3 JetStream volume, in MiB/s."
  type        = number
  default     = 250

  validation {
    condition     = var.data_volume_throughput >= 125 && var.data_volume_throughput <= 1000
    error_message = "data_volume_throughput must be between 125 and 1000 (gp3)."
  }
}

variable "max_file_store" {
  description = "JetStream max_file_store, as nats-server reads it (e.g. 150GB). Keep it below the volume size."
  type        = string
  default     = "150GB"

  validation {
    condition     = can(regex("^[0-9]+(K|M|G|T)B$", var.max_file_store))
    error_message = "max_file_store must be a size such as 150GB."
  }
}

variable "max_memory_store" {
  description = "JetStream max_memory_store, as nats-server reads it (e.g. 2GB)."
  type        = string
  default     = "2GB"

  validation {
    condition     = can(regex("^[0-9]+(K|M|G|T)B$", var.max_memory_store))
    error_message = "max_memory_store must be a size such as 2GB."
  }
}

variable "ports" {
  description = "NATS ports: client, cluster (routes), leafnode and monitoring (HTTPS)."
  type = object({
    client     = number
    cluster    = number
    leafnode   = number
    monitoring = number
  })
  default = {
    client     = 4222
    cluster    = 6222
    leafnode   = 7422
    monitoring = 8222
  }

  validation {
    condition     = length(distinct(values(var.ports))) == 4 && alltrue([for p in values(var.ports) : p > 1024 && p < 65536])
    error_message = "ports must be four distinct unprivileged port numbers."
  }
}

variable "internal_zone_id" {
  description = "Route 53 private hosted zone that holds the node names; it must be associated with every TickMesh VPC."
  type        = string
}

variable "internal_zone_name" {
  description = "Name of that zone, e.g. tickmesh.internal. Nodes are named nats-<az letter>.<domain>.<zone>."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)*[a-z0-9-]+$", var.internal_zone_name))
    error_message = "internal_zone_name must be a DNS name without a trailing dot."
  }
}

variable "tls_secret_arn" {
  description = "Secrets Manager secret (JSON with PEM fields ca, cert, key) holding this cluster's TLS material. The certificate must name *.<domain>.<zone> and, for a leaf cluster, leaf_identity."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", var.tls_secret_arn))
    error_message = "tls_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "password_secret_arns" {
  description = "Secrets Manager secrets holding NATS user passwords, keyed by user. The hub needs ingest, oms and admin; a leaf cluster needs edge and admin."
  type        = map(string)

  validation {
    condition     = alltrue([for k, a in var.password_secret_arns : contains(["ingest", "oms", "edge", "admin"], k) && can(regex("^arn:aws[a-z-]*:secretsmanager:", a))])
    error_message = "password_secret_arns keys must be ingest, oms, edge or admin, and values Secrets Manager secret ARNs."
  }
}

variable "secrets_kms_key_arns" {
  description = "Customer managed KMS keys that encrypt the secrets above, if any."
  type        = list(string)
  default     = []
}

variable "leaf_identity" {
  description = "DNS name carried by every leaf cluster's TLS certificate; the hub maps it to the leaf user (verify_and_map)."
  type        = string
  default     = "leaf.tickmesh.internal"

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z0-9-]+$", var.leaf_identity))
    error_message = "leaf_identity must be a DNS name."
  }
}

variable "hub_leaf_urls" {
  description = "leaf role only: URLs of the hub's leaf-node listener. Each must use tls://."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for u in var.hub_leaf_urls : startswith(u, "tls://")])
    error_message = "hub_leaf_urls must all use the tls:// scheme: leaf links cross the WAN."
  }
}

variable "hub_cidr_blocks" {
  description = "leaf role only: CIDRs of the hub VPC, which leaf nodes may dial on the leafnode port."
  type        = list(string)
  default     = []
}

variable "client_source_security_group_ids" {
  description = "Security groups allowed to reach the client port, keyed by a static name (e.g. { ingest = sg-... })."
  type        = map(string)
  default     = {}
}

variable "leafnode_source_security_group_ids" {
  description = "hub role only: security groups allowed to reach the leafnode port (the internal NLB), keyed by a static name."
  type        = map(string)
  default     = {}
}

variable "monitoring_cidr_blocks" {
  description = "CIDRs allowed to scrape the HTTPS monitoring port. Private ranges only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.monitoring_cidr_blocks : can(cidrhost(c, 0)) && !contains(["0.0.0.0/0", "::/0"], c)])
    error_message = "monitoring_cidr_blocks must be valid CIDRs and never the whole internet."
  }
}

variable "artifact_bucket" {
  description = "S3 bucket holding release artifacts (nats-server and nats CLI builds under nats/<version>/<architecture>/)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.artifact_bucket))
    error_message = "artifact_bucket must be an S3 bucket name."
  }
}

variable "nats_server_version" {
  description = "nats-server version to install (artifact folder name)."
  type        = string
  default     = "2.15.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.nats_server_version))
    error_message = "nats_server_version must be a semantic version such as 2.15.1."
  }
}

variable "lame_duck_duration" {
  description = "How long a stopping node spreads its clients' reconnects over."
  type        = string
  default     = "30s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.lame_duck_duration))
    error_message = "lame_duck_duration must be a number of seconds such as 30s."
  }
}

variable "revocation_ttl_s" {
  description = "TTL of the revocation bucket ctl_revoked, in seconds (leaf role: its regional mirror keeps each revocation this long). The hub's bucket must be created with the same TTL, at least the edges' auth.max_token_lifetime_s (docs/operations.md)."
  type        = number
  default     = 86400

  validation {
    condition     = var.revocation_ttl_s >= 60
    error_message = "revocation_ttl_s must be at least 60 seconds."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
