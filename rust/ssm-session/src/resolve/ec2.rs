//! The EC2 search behind targets: `DescribeInstances` with filters, running instances only,
//! and the errors that say what was searched.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};

use aws_config::SdkConfig;
use aws_sdk_ec2::types::{Filter, Instance};

use super::{MAX_CANDIDATES, ResolvedTarget, Via};
use crate::aws::{api_error, service_endpoint};
use crate::error::{Candidate, Error, Result};

impl ResolvedTarget {
    pub(super) fn from_instance(i: &Instance, via: Via) -> Self {
        let mut ipv6: Vec<Ipv6Addr> = i
            .network_interfaces()
            .iter()
            .flat_map(|n| n.ipv6_addresses())
            .filter_map(|a| a.ipv6_address()?.parse().ok())
            .chain(i.ipv6_address().and_then(|a| a.parse().ok()))
            .collect();
        ipv6.sort();
        ipv6.dedup();
        Self {
            instance_id: i.instance_id().unwrap_or_default().to_owned(),
            name: name_tag(i),
            state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()),
            availability_zone: i.placement().and_then(|p| p.availability_zone()).map(str::to_owned),
            private_ip: i.private_ip_address().and_then(|a| a.parse().ok()),
            public_ip: i.public_ip_address().and_then(|a| a.parse().ok()),
            ipv6,
            via,
        }
    }
}

pub(super) fn name_tag(i: &Instance) -> Option<String> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some("Name"))
        .and_then(|t| t.value())
        .map(str::to_owned)
}

pub(super) fn candidate(i: &Instance) -> Candidate {
    Candidate {
        instance_id: i.instance_id().unwrap_or_default().to_owned(),
        name: name_tag(i),
        state: i
            .state()
            .and_then(|s| s.name())
            .map_or_else(|| "unknown".to_owned(), |n| n.as_str().to_owned()),
    }
}

/// An EC2 client for `config`, with the endpoint checked as [`service_endpoint`] describes.
pub fn ec2_client(config: &SdkConfig, endpoint_url: Option<&str>) -> Result<aws_sdk_ec2::Client> {
    if config.region().is_none() {
        return Err(Error::NoRegion);
    }
    let mut b = aws_sdk_ec2::config::Builder::from(config);
    if let Some(url) = service_endpoint(config, "EC2", endpoint_url)? {
        b = b.endpoint_url(url);
    }
    Ok(aws_sdk_ec2::Client::from_conf(b.build()))
}

pub(super) fn filter(name: &str, values: impl IntoIterator<Item = String>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().collect()))
        .build()
}

/// One EC2 search: filters ANDed, described for error messages.
pub(super) struct Query {
    pub(super) filters: Vec<Filter>,
}

pub(super) struct Found {
    /// Running instances, de-duplicated, in the order EC2 listed them.
    pub(super) running: Vec<Instance>,
    /// Whether paging stopped early with more than [`MAX_CANDIDATES`].
    more: bool,
}

pub(super) struct Ec2Search {
    pub(super) client: aws_sdk_ec2::Client,
    pub(super) page_size: Option<i32>,
}

impl Ec2Search {
    /// Instances matching any of `queries` (each query's filters ANDed), in the given states.
    pub(super) async fn find(&self, queries: &[Query], running_only: bool) -> Result<Found> {
        let searches = queries.iter().map(|q| self.one(q, running_only));
        let results = futures_util::future::try_join_all(searches).await?;
        let mut seen = BTreeSet::new();
        let mut running = Vec::new();
        let mut more = false;
        for (list, m) in results {
            more |= m;
            for i in list {
                if seen.insert(i.instance_id().unwrap_or_default().to_owned()) {
                    running.push(i);
                }
            }
        }
        if running.len() > MAX_CANDIDATES {
            running.truncate(MAX_CANDIDATES);
            more = true;
        }
        Ok(Found { running, more })
    }

    /// Every running instance, page after page, until `limit` are listed.
    pub(super) async fn running(&self, limit: usize) -> Result<Vec<Instance>> {
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(Some(vec![filter("instance-state-name", ["running".to_owned()])]))
            .set_max_results(self.page_size)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| api_error("DescribeInstances", e))?;
            out.extend(
                page.reservations
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|r| r.instances.unwrap_or_default()),
            );
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
        }
        Ok(out)
    }

    async fn one(&self, q: &Query, running_only: bool) -> Result<(Vec<Instance>, bool)> {
        let mut filters = q.filters.clone();
        if running_only {
            filters.push(filter("instance-state-name", ["running".to_owned()]));
        }
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(Some(filters))
            .set_max_results(self.page_size)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| api_error("DescribeInstances", e))?;
            out.extend(
                page.reservations
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|r| r.instances.unwrap_or_default()),
            );
            if out.len() > MAX_CANDIDATES {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    /// Picks the one running instance, or says why not. On no match, searches again without
    /// the state filter so that the error can name instances that exist but are not running.
    pub(super) async fn pick(
        &self,
        target: &str,
        queries: &[Query],
        searched: String,
        via: impl Fn(&Instance) -> Via,
    ) -> Result<ResolvedTarget> {
        let found = self.find(queries, true).await?;
        match found.running.as_slice() {
            [one] => Ok(ResolvedTarget::from_instance(one, via(one))),
            [] => {
                let others = self.find(queries, false).await.map(|f| f.running).unwrap_or_default();
                // Where it looked: the instance may be in another region.
                let searched = match self.client.config().region() {
                    Some(r) => format!("{searched} in {r}"),
                    None => searched,
                };
                Err(not_found(target, searched, &others))
            }
            many => Err(Error::AmbiguousTarget {
                target: target.to_owned(),
                candidates: many.iter().map(candidate).collect(),
                more: found.more,
            }),
        }
    }
}

pub(super) fn not_found(target: &str, mut searched: String, not_running: &[Instance]) -> Error {
    if !not_running.is_empty() {
        let list: Vec<String> = not_running
            .iter()
            .map(candidate)
            .map(|c| match c.name {
                Some(n) => format!("{} (Name={n}, {})", c.instance_id, c.state),
                None => format!("{} ({})", c.instance_id, c.state),
            })
            .collect();
        searched.push_str(&format!("; matched but not running: {}", list.join(", ")));
    }
    Error::TargetNotFound {
        target: target.to_owned(),
        searched,
    }
}

/// Queries that find instances owning any of `addrs`, and a description of them.
pub(super) fn address_queries(addrs: &[IpAddr]) -> (Vec<Query>, String) {
    let v4: Vec<String> = addrs.iter().filter(|a| a.is_ipv4()).map(ToString::to_string).collect();
    let v6: Vec<String> = addrs.iter().filter(|a| a.is_ipv6()).map(ToString::to_string).collect();
    let mut queries = Vec::new();
    let mut what = Vec::new();
    if !v4.is_empty() {
        queries.push(Query {
            filters: vec![filter("private-ip-address", v4.clone())],
        });
        queries.push(Query {
            filters: vec![filter("ip-address", v4.clone())],
        });
        what.push(format!("private or public IPv4 address {}", v4.join(" or ")));
    }
    if !v6.is_empty() {
        queries.push(Query {
            filters: vec![filter("network-interface.ipv6-addresses.ipv6-address", v6.clone())],
        });
        what.push(format!("IPv6 address {}", v6.join(" or ")));
    }
    (queries, format!("running EC2 instances with {}", what.join(" or ")))
}

/// Which of `addrs` the instance owns (the first), for reporting.
pub(super) fn matched_address(i: &Instance, addrs: &[IpAddr]) -> Option<IpAddr> {
    let r = ResolvedTarget::from_instance(i, Via::InstanceId);
    r.addresses().find(|a| addrs.contains(a))
}
