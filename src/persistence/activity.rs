//! Recent request activity for the console's dashboard: archived requests per minute since
//! a point in time, read from the minutely roll-up the archive writer keeps.

use chrono::NaiveDateTime;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Datetime};
use diesel_async::RunQueryDsl;

use crate::actors::persistence::DbConn;
use crate::error::StoreError;

#[derive(QueryableByName)]
struct MinuteRow {
    #[diesel(sql_type = BigInt)]
    minute: i64,
    #[diesel(sql_type = BigInt)]
    requests: i64,
}

/// `(minutes after since, requests)` for each minute since `since` (UTC) that had any.
pub async fn requests_per_minute(
    mut conn: DbConn,
    since: NaiveDateTime,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let rows: Vec<MinuteRow> = diesel::sql_query(
        "SELECT CAST(TIMESTAMPDIFF(MINUTE, ?, minute) AS SIGNED) AS minute, requests \
         FROM usage_minutely WHERE minute >= ? ORDER BY minute",
    )
    .bind::<Datetime, _>(since)
    .bind::<Datetime, _>(since)
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.minute, r.requests)).collect())
}
