//! Binary COPY data written straight into one buffer, and the random values new rows need,
//! drawn in bulk.
//!
//! tokio-postgres's `BinaryCopyInWriter` encodes each value through `dyn ToSql` and hands the
//! connection a message every 4 KiB: for 100,000 students that was about 6,000 wake-ups of the
//! connection task and a third of a core on the loading side, on a machine whose two cores the
//! reader and the Postgres backend already keep busy. Here a row's values are appended in
//! place, and the data goes out in pieces of [`SEND_BYTES`]. The bytes are the same: the
//! format is Postgres's binary COPY format, each value in its type's binary `send` form.

use bytes::{BufMut, Bytes, BytesMut};
use chrono::NaiveDate;
use uuid::Uuid;

/// Bytes handed to the connection at a time: large enough that a 5,000-row chunk goes out in
/// about twenty messages, small enough that the server starts on a chunk before it is all
/// encoded.
pub const SEND_BYTES: usize = 64 * 1024;

/// The binary COPY header: signature, flags, header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Postgres counts dates in days from 2000-01-01.
const POSTGRES_EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(date) => date,
    None => NaiveDate::MIN,
};

/// One binary COPY stream being written: the header, then rows, then (at `finish`) the trailer.
pub struct CopyBuffer {
    buf: BytesMut,
}

impl Default for CopyBuffer {
    fn default() -> Self {
        CopyBuffer::new()
    }
}

impl CopyBuffer {
    pub fn new() -> CopyBuffer {
        let mut buf = BytesMut::with_capacity(SEND_BYTES + 4096);
        buf.put_slice(HEADER);
        CopyBuffer { buf }
    }

    /// Starts a row of `fields` values; exactly that many values must follow.
    pub fn row(&mut self, fields: i16) {
        self.buf.put_i16(fields);
    }

    pub fn null(&mut self) {
        self.buf.put_i32(-1);
    }

    /// A `text` (or `varchar`) value. A value longer than 2 GiB cannot come from a file within
    /// the import's size limit; were one to, its length is written as the largest the format
    /// allows, the server refuses the data as malformed, and the row is isolated and rejected
    /// like any value the database refuses.
    pub fn text(&mut self, value: &str) {
        self.buf
            .put_i32(i32::try_from(value.len()).unwrap_or(i32::MAX));
        self.buf.put_slice(value.as_bytes());
    }

    pub fn uuid(&mut self, value: Uuid) {
        self.buf.put_i32(16);
        self.buf.put_slice(value.as_bytes());
    }

    /// A `date`. Every `NaiveDate` is within `i32` days of 2000 (chrono's range is about
    /// 262,000 years); the saturation only keeps the conversion total.
    pub fn date(&mut self, value: NaiveDate) {
        let days = value.signed_duration_since(POSTGRES_EPOCH).num_days();
        self.buf.put_i32(4);
        self.buf
            .put_i32(i32::try_from(days).unwrap_or(if days < 0 { i32::MIN } else { i32::MAX }));
    }

    pub fn int4(&mut self, value: i32) {
        self.buf.put_i32(4);
        self.buf.put_i32(value);
    }

    pub fn bool(&mut self, value: bool) {
        self.buf.put_i32(1);
        self.buf.put_u8(u8::from(value));
    }

    pub fn opt_text(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    pub fn opt_uuid(&mut self, value: Option<Uuid>) {
        match value {
            Some(value) => self.uuid(value),
            None => self.null(),
        }
    }

    pub fn opt_date(&mut self, value: Option<NaiveDate>) {
        match value {
            Some(value) => self.date(value),
            None => self.null(),
        }
    }

    pub fn opt_int4(&mut self, value: Option<i32>) {
        match value {
            Some(value) => self.int4(value),
            None => self.null(),
        }
    }

    /// True when a piece worth sending has built up.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= SEND_BYTES
    }

    /// The data written so far, to send; the buffer goes on with the next bytes.
    pub fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// The rest of the data, with the trailer that ends the stream.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_i16(-1);
        self.buf.freeze()
    }
}

/// Random bytes read from the operating system a block at a time. Each `Uuid::new_v4` and
/// `Uuid::now_v7` is a `getrandom` system call: two per new student (the token's nonce, the
/// id), 200,000 for a large file.
pub struct RandomPool {
    block: Vec<u8>,
    used: usize,
}

/// Bytes fetched per system call.
const RANDOM_BLOCK: usize = 4096;

impl Default for RandomPool {
    fn default() -> Self {
        RandomPool::new()
    }
}

impl RandomPool {
    pub fn new() -> RandomPool {
        RandomPool {
            block: Vec::new(),
            used: 0,
        }
    }

    /// `N` (at most 4,096) fresh random bytes; none is ever handed out twice.
    pub fn take<const N: usize>(&mut self) -> Result<[u8; N], getrandom::Error> {
        if self.used + N > self.block.len() {
            self.block.resize(RANDOM_BLOCK.max(N), 0);
            getrandom::fill(&mut self.block)?;
            self.used = 0;
        }
        let mut out = [0; N];
        out.copy_from_slice(&self.block[self.used..self.used + N]);
        self.used += N;
        Ok(out)
    }
}

/// UUIDv7 ids in increasing order, as `Uuid::now_v7` makes them (a millisecond timestamp, a
/// 42-bit counter that starts at a random value each millisecond, 32 random bits) but with the
/// random bits drawn in bulk. Increasing ids land at the right edge of the primary key's index.
pub struct IdSequence {
    random: RandomPool,
    millis: u64,
    counter: u64,
}

/// Bits of the counter; its top bit starts clear, so a millisecond has room for 2^41 ids.
const COUNTER_BITS: u32 = 42;

impl Default for IdSequence {
    fn default() -> Self {
        IdSequence::new()
    }
}

impl IdSequence {
    pub fn new() -> IdSequence {
        IdSequence {
            random: RandomPool::new(),
            millis: 0,
            counter: 0,
        }
    }

    pub fn next_id(&mut self) -> Result<Uuid, getrandom::Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.next_at(now)
    }

    /// The next id at the unix time `now` (milliseconds); never smaller than the last one, even
    /// when the clock steps back.
    fn next_at(&mut self, now: u64) -> Result<Uuid, getrandom::Error> {
        if now > self.millis {
            self.millis = now;
            self.counter = self.seed()?;
        } else {
            self.counter += 1;
            if self.counter >= 1 << COUNTER_BITS {
                self.millis += 1;
                self.counter = self.seed()?;
            }
        }
        let tail = u128::from(u32::from_be_bytes(self.random.take::<4>()?));
        let millis = u128::from(self.millis & 0xFFFF_FFFF_FFFF);
        let counter = u128::from(self.counter);
        let value = (millis << 80)
            | (0x7 << 76)
            | ((counter >> 30) << 64)
            | (0b10 << 62)
            | ((counter & 0x3FFF_FFFF) << 32)
            | tail;
        Ok(Uuid::from_u128(value))
    }

    fn seed(&mut self) -> Result<u64, getrandom::Error> {
        let bytes = self.random.take::<8>()?;
        Ok(u64::from_be_bytes(bytes) & ((1 << (COUNTER_BITS - 1)) - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::types::{ToSql, Type};

    /// A value as `BinaryCopyInWriter` writes it: its length, then its `ToSql` bytes.
    fn to_sql(value: &(dyn ToSql + Sync), ty: Type) -> Vec<u8> {
        let mut bytes = BytesMut::new();
        let mut out = BytesMut::new();
        match value.to_sql_checked(&ty, &mut bytes).unwrap() {
            tokio_postgres::types::IsNull::Yes => out.put_i32(-1),
            tokio_postgres::types::IsNull::No => {
                out.put_i32(bytes.len() as i32);
                out.put_slice(&bytes);
            }
        }
        out.to_vec()
    }

    fn written(write: impl FnOnce(&mut CopyBuffer)) -> Vec<u8> {
        let mut buffer = CopyBuffer::new();
        let _ = buffer.take();
        write(&mut buffer);
        buffer.take().to_vec()
    }

    #[test]
    fn values_are_written_as_tokio_postgres_writes_them() {
        let id = Uuid::now_v7();
        assert_eq!(written(|b| b.uuid(id)), to_sql(&id, Type::UUID));
        assert_eq!(
            written(|b| b.text("Student 7")),
            to_sql(&"Student 7", Type::TEXT)
        );
        assert_eq!(written(|b| b.text("")), to_sql(&"", Type::TEXT));
        assert_eq!(written(|b| b.text("ஆ")), to_sql(&"ஆ", Type::TEXT));
        for date in [
            NaiveDate::from_ymd_opt(2004, 3, 9).unwrap(),
            NaiveDate::from_ymd_opt(1945, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(),
        ] {
            assert_eq!(written(|b| b.date(date)), to_sql(&date, Type::DATE));
        }
        assert_eq!(written(|b| b.int4(2021)), to_sql(&2021i32, Type::INT4));
        assert_eq!(written(|b| b.int4(-3)), to_sql(&-3i32, Type::INT4));
        assert_eq!(written(|b| b.bool(true)), to_sql(&true, Type::BOOL));
        assert_eq!(written(|b| b.bool(false)), to_sql(&false, Type::BOOL));
        let none: Option<&str> = None;
        assert_eq!(written(|b| b.opt_text(None)), to_sql(&none, Type::TEXT));
        assert_eq!(
            written(|b| b.opt_int4(None)),
            to_sql(&None::<i32>, Type::INT4)
        );
        assert_eq!(
            written(|b| b.opt_uuid(None)),
            to_sql(&None::<Uuid>, Type::UUID)
        );
        assert_eq!(
            written(|b| b.opt_date(None)),
            to_sql(&None::<NaiveDate>, Type::DATE)
        );
    }

    #[test]
    fn a_stream_has_the_header_its_rows_and_the_trailer() {
        let mut buffer = CopyBuffer::new();
        buffer.row(2);
        buffer.int4(1);
        buffer.null();
        let mut all = buffer.take().to_vec();
        all.extend_from_slice(&buffer.finish());
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&[0, 2, 0, 0, 0, 4, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(all, expected);
    }

    #[test]
    fn the_pool_never_hands_out_the_same_bytes_twice_in_a_row() {
        let mut pool = RandomPool::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5_000 {
            assert!(seen.insert(pool.take::<8>().unwrap()));
        }
    }

    #[test]
    fn ids_are_version_7_increasing_and_carry_the_time() {
        let mut ids = IdSequence::new();
        let mut last = Uuid::nil();
        // The same millisecond, then a later one, then a clock that stepped back.
        for now in [1_700_000_000_000u64; 1_000]
            .into_iter()
            .chain([1_700_000_000_005; 10])
            .chain([1_699_999_999_000; 10])
        {
            let id = ids.next_at(now).unwrap();
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert!(id > last, "{id} after {last}");
            last = id;
        }
        let (secs, nanos) = ids
            .next_at(1_700_000_000_006)
            .unwrap()
            .get_timestamp()
            .unwrap()
            .to_unix();
        assert_eq!((secs, nanos / 1_000_000), (1_700_000_000, 6));
        assert!(IdSequence::new()
            .next_id()
            .unwrap()
            .get_timestamp()
            .is_some());
    }

    #[test]
    fn a_full_counter_moves_on_to_the_next_millisecond() {
        let mut ids = IdSequence::new();
        let first = ids.next_at(1_000).unwrap();
        ids.counter = (1 << COUNTER_BITS) - 1;
        let next = ids.next_at(1_000).unwrap();
        assert!(next > first);
        let (secs, nanos) = next.get_timestamp().unwrap().to_unix();
        assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, 1_001);
    }
}
