//! Leaving Redis as a benchmark found it.

/// Unlinks every key matching `pattern`, walking the keyspace with SCAN.
pub async fn unlink_matching(
    connection: &mut redis::aio::ConnectionManager,
    pattern: &str,
) -> redis::RedisResult<u64> {
    let mut cursor = 0u64;
    let mut removed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await?;
        if !keys.is_empty() {
            removed += keys.len() as u64;
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(connection)
                .await?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}
