variable "domain" {
  description = "Name of the region in TickMesh: its JetStream domain, NATS cluster name and DNS label. Usually the AWS region name, e.g. eu-west-1."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,16}[a-z0-9]$", var.domain)) && var.domain != "hub"
    error_message = "domain must be 3-18 lower-case letters, digits and dashes (load balancer names are tickmesh-<domain>-edge, 32 characters at most), and not \"hub\"."
  }
}

variable "hub_domain" {
  description = "JetStream domain of the hub."
  type        = string
  default     = "hub"
}

variable "vpc_id" {
  description = "VPC of the region."
  type        = string
}

variable "azs" {
  description = "Availability zones of the region. The leaf cluster puts one node in each of the first three; every zone gets its own edge Auto Scaling group."
  type        = list(string)

  validation {
    condition     = length(var.azs) >= 3 && length(var.azs) <= 6 && length(distinct(var.azs)) == length(var.azs)
    error_message = "azs must list 3 to 6 distinct availability zones."
  }
}

variable "private_subnet_ids" {
  description = "Private subnet ID per availability zone (NATS nodes, edges)."
  type        = map(string)
}

variable "public_subnet_ids" {
  description = "Public subnet ID per availability zone (the edge NLB)."
  type        = map(string)
}

variable "ami_id" {
  description = "Amazon Linux 2023 AMI of the region's instances (AMI IDs differ per region)."
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

# --- leaf cluster ------------------------------------------------------------------------

variable "nats_instance_type" {
  description = "Instance type of the leaf cluster's NATS nodes."
  type        = string
  default     = "c7g.large"
}

variable "nats_data_volume_size_gb" {
  description = "Size of each leaf node's JetStream volume (the md_last mirror), in GiB."
  type        = number
  default     = 50
}

variable "nats_max_file_store" {
  description = "JetStream max_file_store of each leaf node; keep it below the volume size."
  type        = string
  default     = "40GB"
}

variable "internal_zone_id" {
  description = "Route 53 private hosted zone of the deployment, associated with every TickMesh VPC."
  type        = string
}

variable "internal_zone_name" {
  description = "Name of that zone, e.g. tickmesh.internal."
  type        = string
}

variable "hub_leaf_urls" {
  description = "URLs of the hub's leaf-node listener (module hub, output leaf_urls)."
  type        = list(string)

  validation {
    condition     = length(var.hub_leaf_urls) > 0 && alltrue([for u in var.hub_leaf_urls : startswith(u, "tls://")])
    error_message = "hub_leaf_urls must be non-empty and all use tls://."
  }
}

variable "hub_cidr_blocks" {
  description = "CIDRs of the hub VPC (peered with this one)."
  type        = list(string)
}

variable "leaf_identity" {
  description = "DNS name in this region's leaf certificate that the hub maps to the leaf user."
  type        = string
  default     = "leaf.tickmesh.internal"
}

variable "leaf_tls_secret_arn" {
  description = "Secrets Manager secret (JSON: ca, cert, key) of the leaf nodes. The certificate must name *.<domain>.<zone> and leaf_identity."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", var.leaf_tls_secret_arn))
    error_message = "leaf_tls_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "edge_password_secret_arn" {
  description = "Secrets Manager secret holding the NATS password of user edge."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", var.edge_password_secret_arn))
    error_message = "edge_password_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "admin_password_secret_arn" {
  description = "Secrets Manager secret holding the NATS password of user admin (sets up the md_last mirror)."
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

# --- edges ----------------------------------------------------------------------------------

variable "edge_tls_secret_arn" {
  description = "Secrets Manager secret (JSON: ca, and with edge_tls_termination = \"edge\" also cert and key) of the edges. ca verifies the leaf nodes."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", var.edge_tls_secret_arn))
    error_message = "edge_tls_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "jwt_key_secret_arn" {
  description = "Secrets Manager secret holding the key edges verify client JWTs with (HS256 secret or public key PEM)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", var.jwt_key_secret_arn))
    error_message = "jwt_key_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "jwt_algorithm" {
  description = "What jwt_key_secret_arn holds: hs256 (a shared secret), rs256 or eddsa (a PEM public key), or jwks (a JWKS document)."
  type        = string
  default     = "hs256"

  validation {
    condition     = contains(["hs256", "rs256", "eddsa", "jwks"], var.jwt_algorithm)
    error_message = "jwt_algorithm must be hs256, rs256, eddsa or jwks."
  }
}

variable "jwt_audience" {
  description = "The aud claim every client token must carry (tokens minted for another service are refused)."
  type        = string

  validation {
    condition     = can(regex("^[^\"\\\\[:cntrl:]]{1,256}$", var.jwt_audience))
    error_message = "jwt_audience must be 1-256 characters, without quotes, backslashes or control characters."
  }
}

variable "jwt_issuer" {
  description = "The iss claim every client token must carry: the identity provider that mints them."
  type        = string

  validation {
    condition     = can(regex("^[^\"\\\\[:cntrl:]]{1,256}$", var.jwt_issuer))
    error_message = "jwt_issuer must be 1-256 characters, without quotes, backslashes or control characters."
  }
}

variable "jwt_max_token_lifetime_s" {
  description = "Longest a client token may live (exp - iat), in seconds (the edges' auth.max_token_lifetime_s)."
  type        = number
  default     = 3600

  validation {
    condition     = var.jwt_max_token_lifetime_s >= 60 && var.jwt_max_token_lifetime_s <= 86400 && floor(var.jwt_max_token_lifetime_s) == var.jwt_max_token_lifetime_s
    error_message = "jwt_max_token_lifetime_s must be a whole number of seconds between 60 and 86400."
  }
}

variable "edge_anonymous" {
  description = "Connections without a token: off by default. When enabled, they get tier (a tier of edge_extra_toml's [auth.tiers], with a min_interval_ms above 0) and the entitlement patterns ent, which must name symbols: \"*\" is refused."
  type = object({
    enabled = bool
    tier    = string
    ent     = list(string)
  })
  default = {
    enabled = false
    tier    = "anonymous"
    ent     = []
  }

  validation {
    condition = (
      can(regex("^[A-Za-z0-9_-]{1,64}$", var.edge_anonymous.tier))
      && alltrue([for p in var.edge_anonymous.ent : can(regex("^[A-Z0-9][A-Z0-9_-]{0,63}[*]?$", p))])
      && (!var.edge_anonymous.enabled || length(var.edge_anonymous.ent) > 0)
    )
    error_message = "edge_anonymous: tier must be a tier name; ent must list symbols or SYMBOL* patterns (never \"*\"), at least one when enabled."
  }
}

variable "edge_tls_termination" {
  description = "Where client TLS ends: \"nlb\" (TLS listener with an ACM certificate; edges serve ws on edge_ports.ws) or \"edge\" (TCP pass-through; edges serve wss on edge_ports.wss)."
  type        = string
  default     = "nlb"

  validation {
    condition     = contains(["nlb", "edge"], var.edge_tls_termination)
    error_message = "edge_tls_termination must be \"nlb\" or \"edge\"."
  }
}

variable "edge_certificate_arn" {
  description = "ACM certificate of the public name, used when edge_tls_termination = \"nlb\"."
  type        = string
  default     = null

  validation {
    condition     = var.edge_certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/", var.edge_certificate_arn))
    error_message = "edge_certificate_arn must be an ACM certificate ARN."
  }
}

variable "edge_ports" {
  description = "Port the edge listens on (WebSocket, /readyz): ws when TLS ends at the NLB, wss when it ends at the edge."
  type = object({
    ws  = number
    wss = number
  })
  default = {
    ws  = 8080
    wss = 8443
  }
}

variable "edge_metrics_port" {
  description = "Port of the edge's /metrics (metrics_listen), open to monitoring_cidr_blocks only; never the client port."
  type        = number
  default     = 9102

  validation {
    condition     = var.edge_metrics_port > 1024 && var.edge_metrics_port < 65536 && floor(var.edge_metrics_port) == var.edge_metrics_port
    error_message = "edge_metrics_port must be an unprivileged port."
  }
}

variable "client_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach the public listener (443)."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.client_cidr_blocks) > 0 && alltrue([for c in var.client_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "client_cidr_blocks must be valid IPv4 CIDRs."
  }
}

variable "artifact_bucket" {
  description = "S3 bucket with the release artifacts: tickmesh/<version>/<architecture>/tickmesh-edge and nats/<version>/<architecture>/{nats-server,nats}."
  type        = string
}

variable "release_version" {
  description = "TickMesh release the edges run."
  type        = string

  validation {
    condition     = can(regex("^[0-9A-Za-z][0-9A-Za-z._-]*$", var.release_version))
    error_message = "release_version must be a plain version string such as 1.4.0."
  }
}

variable "release_version_overrides" {
  description = "Per availability zone release, for rolling a release one zone's edge group at a time (see docs/deploy.md). Zones not listed run release_version."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for v in values(var.release_version_overrides) : can(regex("^[0-9A-Za-z][0-9A-Za-z._-]*$", v))])
    error_message = "release_version_overrides values must be plain version strings."
  }
}

variable "nats_server_version" {
  description = "nats-server version of the leaf nodes."
  type        = string
  default     = "2.15.1"
}

variable "edge_instance_type" {
  description = "Instance type of the edges."
  type        = string
  default     = "c7g.xlarge"
}

variable "edge_capacity" {
  description = "Size of each availability zone's edge group."
  type = object({
    min     = number
    max     = number
    desired = number
  })
  default = {
    min     = 2
    max     = 10
    desired = 2
  }

  validation {
    condition     = var.edge_capacity.min >= 1 && var.edge_capacity.min <= var.edge_capacity.desired && var.edge_capacity.desired <= var.edge_capacity.max
    error_message = "edge_capacity needs 1 <= min <= desired <= max: every zone keeps at least one edge."
  }
}

variable "edge_cpu_target_percent" {
  description = "Average CPU each edge group scales to hold."
  type        = number
  default     = 55

  validation {
    condition     = var.edge_cpu_target_percent >= 20 && var.edge_cpu_target_percent <= 90
    error_message = "edge_cpu_target_percent must be between 20 and 90."
  }
}

variable "edge_drain_window_s" {
  description = "Window over which a draining edge spreads its clients' reconnect after_ms."
  type        = number
  default     = 30

  validation {
    condition     = var.edge_drain_window_s >= 5 && var.edge_drain_window_s <= 600
    error_message = "edge_drain_window_s must be between 5 and 600."
  }
}

variable "edge_drain_grace_s" {
  description = "Time a draining edge has to finish (window plus closing); systemd waits this long plus a margin."
  type        = number
  default     = 45

  validation {
    condition     = var.edge_drain_grace_s >= 10 && var.edge_drain_grace_s <= 900
    error_message = "edge_drain_grace_s must be between 10 and 900."
  }
}

variable "edge_deregistration_delay_s" {
  description = "NLB deregistration delay of an edge. Must exceed edge_drain_grace_s, so the NLB never cuts connections the edge is still draining."
  type        = number
  default     = 90

  validation {
    condition     = var.edge_deregistration_delay_s >= 0 && var.edge_deregistration_delay_s <= 3600
    error_message = "edge_deregistration_delay_s must be between 0 and 3600."
  }
}

variable "edge_min_healthy_percentage" {
  description = "Share of an edge group that stays in service during an instance refresh."
  type        = number
  default     = 90

  validation {
    condition     = var.edge_min_healthy_percentage >= 50 && var.edge_min_healthy_percentage <= 100
    error_message = "edge_min_healthy_percentage must be between 50 and 100."
  }
}

variable "edge_extra_toml" {
  description = "Extra TOML tables appended to edge.toml (e.g. [limits], [session], [auth.tiers.pro]); tables only, since it comes after [shutdown]."
  type        = string
  default     = ""
}

variable "shards" {
  description = "Deployment-wide shard count of tick subjects; must match ingest."
  type        = number
  default     = 64

  validation {
    condition     = var.shards >= 1 && var.shards <= 4096 && floor(var.shards) == var.shards
    error_message = "shards must be an integer between 1 and 4096."
  }
}

variable "monitoring_cidr_blocks" {
  description = "Private CIDRs allowed to scrape NATS monitoring and edge /metrics (edge_metrics_port)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.monitoring_cidr_blocks : can(cidrhost(c, 0)) && !contains(["0.0.0.0/0", "::/0"], c)])
    error_message = "monitoring_cidr_blocks must be valid CIDRs and never the whole internet."
  }
}

variable "access_logs_bucket" {
  description = "S3 bucket (in this region, writable by the ELB log delivery service) for the edge NLB's TLS connection logs; null to keep none."
  type        = string
  default     = null

  validation {
    condition     = var.access_logs_bucket == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.access_logs_bucket))
    error_message = "access_logs_bucket must be an S3 bucket name."
  }
}

variable "deletion_protection" {
  description = "Protect the edge load balancer from deletion."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
