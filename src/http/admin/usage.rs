//! `/admin/usage`: usage reports from the archive (totals, daily trend, breakdowns by model,
//! key and account; optional trend by one of them) over a date range, cost in USD.

use actix_web::{HttpResponse, web};

use super::{AdminAuth, Params, ok, param_str};
use crate::service::AdminError;
use crate::service::reports::{self, GroupBy, ReportQuery};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/usage", web::get().to(report))
        .route("/usage/report", web::get().to(report));
}

/// `GET /admin/usage?from=YYYY-MM-DD&to=…&keyId=…&accountId=…&model=…&groupBy=key|account|model`.
async fn report(auth: AdminAuth, params: Params) -> Result<HttpResponse, AdminError> {
    let (from, to) = reports::date_range(
        params.get("from").map(String::as_str),
        params.get("to").map(String::as_str),
        7,
        auth.ctx.config.timezone_offset_hours,
    )?;
    let group_by =
        match param_str(&params, "groupBy") {
            None => None,
            Some(g) => Some(GroupBy::parse(&g).ok_or_else(|| {
                AdminError::field("groupBy", "must be one of: key, account, model")
            })?),
        };
    let q = ReportQuery {
        key_id: param_str(&params, "keyId"),
        account_id: param_str(&params, "accountId"),
        model: param_str(&params, "model"),
        group_by,
    };
    Ok(ok(reports::report(&auth.ctx, from, to, &q).await?))
}
