# Edge gateways: one Auto Scaling group per availability zone, so that a release or a
# scaling change is rolled one zone at a time, never across the whole region at once.

locals {
  tls_at_edge   = var.edge_tls_termination == "edge"
  target_port   = local.tls_at_edge ? var.edge_ports.wss : var.edge_ports.ws
  edge_tls_dir  = "/etc/tickmesh/tls"
  edge_versions = { for az in var.azs : az => lookup(var.release_version_overrides, az, var.release_version) }

  # The edge user's NATS password, written at boot from Secrets Manager ([nats.auth] password_file).
  edge_nats_password_file = "/etc/tickmesh/nats-edge.password"

  edge_conf_template = "${local.templates}/edge.toml.tftpl"
  edge_conf_vars = {
    for az in var.azs : az => {
      name                     = "${var.domain}-${substr(az, length(az) - 1, 1)}"
      listen_port              = local.target_port
      metrics_port             = var.edge_metrics_port
      tls_listen               = local.tls_at_edge
      tls_dir                  = local.edge_tls_dir
      nats_urls                = module.leaf.client_urls
      nats_ca_file             = "${local.edge_tls_dir}/ca.pem"
      nats_password_file       = local.edge_nats_password_file
      kv_domain                = var.domain
      hub_domain               = var.hub_domain
      shards                   = var.shards
      jwt_algorithm            = var.jwt_algorithm
      jwt_key_file             = "${local.edge_tls_dir}/jwt.key"
      jwt_audience             = var.jwt_audience
      jwt_issuer               = var.jwt_issuer
      jwt_max_token_lifetime_s = var.jwt_max_token_lifetime_s
      anonymous                = var.edge_anonymous.enabled
      anonymous_tier           = var.edge_anonymous.tier
      anonymous_ent            = var.edge_anonymous.ent
      drain_window_ms          = var.edge_drain_window_s * 1000
      drain_grace_ms           = var.edge_drain_grace_s * 1000
      extra_toml               = var.edge_extra_toml
    }
  }
}

module "edge_role" {
  source = "../instance-role"

  name                 = "${local.name}-edge"
  artifact_object_arns = ["arn:${data.aws_partition.current.partition}:s3:::${var.artifact_bucket}/tickmesh/*"]
  secret_arns          = [var.edge_tls_secret_arn, var.edge_password_secret_arn, var.jwt_key_secret_arn]
  kms_key_arns         = var.secrets_kms_key_arns
  tags                 = var.tags
}

resource "aws_launch_template" "edge" {
  for_each = toset(var.azs)

  name_prefix   = "${local.name}-edge-${substr(each.key, length(each.key) - 1, 1)}-"
  image_id      = var.ami_id
  instance_type = var.edge_instance_type
  ebs_optimized = true

  iam_instance_profile {
    name = module.edge_role.instance_profile_name
  }

  vpc_security_group_ids = [aws_security_group.edge.id]

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

  user_data = base64encode(templatefile("${local.templates}/bootstrap.sh.tftpl", {
    role                = "edge"
    service_user        = "tickmesh"
    tls_secret_arn      = var.edge_tls_secret_arn
    tls_dir             = local.edge_tls_dir
    env_file            = "/etc/tickmesh/edge.env"
    env_secrets         = {}
    env_plain           = {}
    file_secrets        = { "${local.edge_tls_dir}/jwt.key" = var.jwt_key_secret_arn }
    nats_password_files = { "${local.edge_nats_password_file}" = var.edge_password_secret_arn }
    data_volume_id      = ""
    data_dir            = ""
    artifacts = {
      "/opt/tickmesh/bin/tickmesh-edge" = "s3://${var.artifact_bucket}/tickmesh/${local.edge_versions[each.key]}/${var.architecture}/tickmesh-edge"
    }
    files = {
      "/etc/tickmesh/edge.toml" = base64encode(templatefile(local.edge_conf_template, local.edge_conf_vars[each.key]))
      "/etc/systemd/system/tickmesh-edge.service" = base64encode(templatefile("${local.templates}/systemd/tickmesh-service.service.tftpl", {
        service        = "edge"
        env_file       = "/etc/tickmesh/edge.env"
        stop_timeout_s = var.edge_drain_grace_s + 15
      }))
      "/opt/tickmesh/bin/edge-lifecycle-watch" = base64encode(templatefile("${local.templates}/edge-lifecycle-watch.sh.tftpl", {
        deregistration_delay_s = var.edge_deregistration_delay_s
        poll_interval_s        = 5
      }))
      "/etc/systemd/system/tickmesh-lifecycle.service" = base64encode(file("${local.templates}/systemd/tickmesh-lifecycle.service.tftpl"))
    }
    units = ["tickmesh-edge.service", "tickmesh-lifecycle.service"]
    sysctls = {
      "net.core.somaxconn"           = 4096
      "net.ipv4.tcp_max_syn_backlog" = 8192
      "net.ipv4.ip_local_port_range" = "1024 65000"
      "fs.file-max"                  = 2097152
    }
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${local.name}-edge", "tickmesh:role" = "edge", "tickmesh:az" = each.key })
  }

  tags = merge(var.tags, { "tickmesh:az" = each.key })

  lifecycle {
    precondition {
      condition     = var.edge_metrics_port != local.target_port
      error_message = "edge_metrics_port must differ from the edge's serving port: /metrics is served on its own listener, never to clients."
    }
  }
}

resource "aws_autoscaling_group" "edge" {
  for_each = toset(var.azs)

  name                      = "${local.name}-edge-${each.key}"
  vpc_zone_identifier       = [var.private_subnet_ids[each.key]]
  min_size                  = var.edge_capacity.min
  max_size                  = var.edge_capacity.max
  desired_capacity          = var.edge_capacity.desired
  target_group_arns         = [aws_lb_target_group.edge.arn]
  health_check_type         = "ELB"
  health_check_grace_period = 120
  default_instance_warmup   = 60
  termination_policies      = ["OldestLaunchTemplate", "OldestInstance"]

  launch_template {
    id      = aws_launch_template.edge[each.key].id
    version = aws_launch_template.edge[each.key].latest_version
  }

  # A new launch template version (a release for this zone) replaces the group's instances
  # a few at a time; each one drains before the NLB lets go of its connections.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = var.edge_min_healthy_percentage
      instance_warmup        = 60
      auto_rollback          = true
    }
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = "${local.name}-edge-${each.key}", "tickmesh:role" = "edge", "tickmesh:az" = each.key })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  # Target tracking owns the running size.
  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

resource "aws_autoscaling_policy" "edge_cpu" {
  for_each = aws_autoscaling_group.edge

  name                   = "cpu-target"
  autoscaling_group_name = each.value.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value = var.edge_cpu_target_percent

    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
  }
}

# ---------------------------------------------------------------------------------------
# Public NLB: TLS (or TCP pass-through) on 443, health checks on /readyz, which turns 503
# as soon as an edge starts draining.
# ---------------------------------------------------------------------------------------

resource "aws_lb" "edge" {
  name                             = "${local.name}-edge"
  internal                         = false
  load_balancer_type               = "network"
  subnets                          = [for az in var.azs : var.public_subnet_ids[az]]
  security_groups                  = [aws_security_group.edge_nlb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection

  # Connection logs of the TLS listener, into the account's log bucket when one is given.
  dynamic "access_logs" {
    for_each = var.access_logs_bucket == null ? [] : [var.access_logs_bucket]

    content {
      bucket  = access_logs.value
      prefix  = "tickmesh/${var.domain}/edge-nlb"
      enabled = true
    }
  }

  tags = var.tags
}

resource "aws_lb_target_group" "edge" {
  name                   = "${local.name}-edge"
  port                   = local.target_port
  protocol               = "TCP"
  target_type            = "instance"
  vpc_id                 = var.vpc_id
  deregistration_delay   = var.edge_deregistration_delay_s
  connection_termination = true

  # /readyz on the serving port: HTTP behind the TLS listener, HTTPS when TLS ends at the
  # edge (the NLB does not check the certificate).
  health_check {
    protocol            = local.tls_at_edge ? "HTTPS" : "HTTP"
    port                = "traffic-port"
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.edge_deregistration_delay_s > var.edge_drain_grace_s && var.edge_drain_grace_s > var.edge_drain_window_s
      error_message = "Need edge_drain_window_s < edge_drain_grace_s < edge_deregistration_delay_s, or the NLB cuts clients that have not been told to reconnect."
    }
  }
}

resource "aws_lb_listener" "edge" {
  load_balancer_arn = aws_lb.edge.arn
  port              = 443
  protocol          = local.tls_at_edge ? "TCP" : "TLS"
  certificate_arn   = local.tls_at_edge ? null : var.edge_certificate_arn
  ssl_policy        = local.tls_at_edge ? null : "ELBSecurityPolicy-TLS13-1-2-2021-06"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.edge.arn
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = local.tls_at_edge || var.edge_certificate_arn != null
      error_message = "edge_certificate_arn is required when edge_tls_termination = \"nlb\"."
    }
  }
}
