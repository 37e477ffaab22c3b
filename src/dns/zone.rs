//! The cluster's zones as a hickory [`ZoneHandler`]: the cluster domain, and
//! the reverse zones (chained before the forwarder, which answers reverse
//! names of addresses that are not the cluster's). Every answer comes from
//! the current [`Index`](super::records::Index); nothing here does I/O.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, RecordType, TSigResponseContext};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, LookupRecords,
    ZoneHandler, ZoneType,
};

use super::records::{Answer, Shared};

/// One zone (`cluster.local.`, `in-addr.arpa.` or `ip6.arpa.`) answered from the index.
pub struct ClusterZone {
    origin: LowerName,
    index: Shared,
}

impl ClusterZone {
    /// The zone `origin`, answered from `index`.
    pub fn new(origin: Name, index: Shared) -> Self {
        Self {
            origin: LowerName::new(&origin),
            index,
        }
    }

    fn answer(&self, name: &LowerName, rtype: RecordType) -> LookupControlFlow<AuthLookup> {
        let index = self.index.current();
        let name = Name::from(name.clone());
        // The catalog asks each handler for its own SOA to put in the
        // authority section of negative answers.
        if rtype == RecordType::SOA && LowerName::new(&name) == self.origin {
            let soa = index.soa(&name);
            return LookupControlFlow::Break(Ok(AuthLookup::answers(
                LookupRecords::Section(vec![soa]),
                None,
            )));
        }
        match index.answer(&name, rtype) {
            Answer::Records {
                answers,
                additionals,
            } => LookupControlFlow::Break(Ok(AuthLookup::answers(
                LookupRecords::Section(answers),
                (!additionals.is_empty()).then_some(LookupRecords::Section(additionals)),
            ))),
            Answer::NoData => LookupControlFlow::Break(Err(LookupError::NameExists)),
            Answer::NxDomain => {
                LookupControlFlow::Break(Err(LookupError::ResponseCode(ResponseCode::NXDomain)))
            }
            Answer::Pass => LookupControlFlow::Skip,
        }
    }
}

#[async_trait::async_trait]
impl ZoneHandler for ClusterZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        self.answer(name, rtype)
    }

    async fn search(
        &self,
        request: &Request,
        _lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let info = match request.request_info() {
            Ok(info) => info,
            Err(e) => return (LookupControlFlow::Break(Err(e)), None),
        };
        (
            self.answer(info.query.name(), info.query.query_type()),
            None,
        )
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        // No DNSSEC for cluster names (CoreDNS signs nothing either).
        LookupControlFlow::Break(Ok(AuthLookup::default()))
    }
}
