//! Measurement spike, not part of the product and not built by CI: the 4M-row bench bucket's
//! out-of-core compaction written with arrow-rs instead of DuckDB, to learn whether another engine
//! would meet the 2x-the-copy-floor goal of issue #5 (README, Performance). Same algorithm as the
//! product's out-of-core path: a narrow read of id/updated/platform/datetime, dedup (latest `updated`,
//! then later file, then later row) and rank in output order, one pass scattering the winners by rank
//! range into lz4 Arrow IPC files, then each range sorted by rank and written as zstd Parquet, two
//! ranges at a time. It leaves out what the product adds: the union of drifted schemas and its casts,
//! bad-input errors, bloom filters, GeoParquet metadata, appending the ranges into one file, the
//! verification read and a memory bound on the scatter's buffers.
//!
//!   cargo build --release
//!   target/release/arrow-rs-out-of-core <bucket dir of part files> <empty work dir> [rows per range]
//!   (LANES=2 threads, ZLEVEL=3 zstd level, RG=8192 rows per row group)
use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use arrow::ipc::CompressionType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = &args[1];
    let work = &args[2];
    let chunk_rows: u32 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(96559);
    let lanes: usize = std::env::var("LANES").ok().map(|s| s.parse().unwrap()).unwrap_or(2);
    let zlevel: i32 = std::env::var("ZLEVEL").ok().map(|s| s.parse().unwrap()).unwrap_or(3);
    let rg_rows: usize = std::env::var("RG").ok().map(|s| s.parse().unwrap()).unwrap_or(8192);
    let mut files: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path().to_string_lossy().to_string()).collect();
    files.sort();
    std::fs::create_dir_all(work).unwrap();
    let t0 = Instant::now();

    // 1. Narrow read: id, updated, platform, datetime of every row, files in parallel.
    let narrow: Vec<Mutex<Vec<RecordBatch>>> = files.iter().map(|_| Mutex::new(vec![])).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..lanes {
            s.spawn(|| loop {
                let f = next.fetch_add(1, Ordering::SeqCst);
                if f >= files.len() { break; }
                let b = ParquetRecordBatchReaderBuilder::try_new(File::open(&files[f]).unwrap()).unwrap();
                let mask = ProjectionMask::columns(b.parquet_schema(), ["id", "updated", "platform", "datetime"]);
                let r = b.with_projection(mask).with_batch_size(65536).build().unwrap();
                let v: Vec<RecordBatch> = r.map(|x| x.unwrap()).collect();
                *narrow[f].lock().unwrap() = v;
            });
        }
    });
    let t1 = Instant::now();

    // 2. Dedup: greatest updated (null loses), then later file, then later row. Two shards by id hash.
    #[derive(Clone, Copy)]
    struct Cand { updated: i64, has: bool, file: u32, row: u32 }
    fn fx(s: &str) -> u64 { let mut h: u64 = 0; for c in s.as_bytes().chunks(8) { let mut w = [0u8; 8]; w[..c.len()].copy_from_slice(c); h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95); } h }
    #[derive(Default, Clone, Copy)]
    struct IdHash(u64);
    impl std::hash::Hasher for IdHash { fn finish(&self) -> u64 { self.0 } fn write(&mut self, b: &[u8]) { self.0 ^= fx(unsafe { std::str::from_utf8_unchecked(b) }); } fn write_u8(&mut self, _: u8) {} }
    type B = std::hash::BuildHasherDefault<IdHash>;
    let guards: Vec<_> = narrow.iter().map(|m| m.lock().unwrap()).collect();
    let batches: Vec<&Vec<RecordBatch>> = guards.iter().map(|g| &**g).collect();
    let mut rows_per_file = vec![0u32; files.len()];
    for (f, bs) in batches.iter().enumerate() { rows_per_file[f] = bs.iter().map(|b| b.num_rows() as u32).sum(); }
    let shards = lanes.max(1);
    let winners: Vec<Vec<(u32, u32)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..shards).map(|sh| { let batches = &batches; s.spawn(move || {
            let mut best: HashMap<&str, Cand, B> = HashMap::with_capacity_and_hasher(4_000_000 / shards, B::default());
            for (f, bs) in batches.iter().enumerate() {
                let mut row = 0u32;
                for b in bs.iter() {
                    let id = b.column_by_name("id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
                    let up = b.column_by_name("updated").unwrap().as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
                    for i in 0..b.num_rows() {
                        let key = id.value(i);
                        if ((fx(key) >> 40) as usize) % shards != sh { row += 1; continue; }
                        let c = Cand { updated: if up.is_null(i) { i64::MIN } else { up.value(i) }, has: !up.is_null(i), file: f as u32, row };
                        let e = best.entry(key).or_insert(c);
                        let better = match (c.has, e.has) { (true, true) => c.updated >= e.updated, (true, false) => true, (false, true) => false, (false, false) => true };
                        if better { *e = c; }
                        row += 1;
                    }
                }
            }
            best.values().map(|c| (c.file, c.row)).collect::<Vec<_>>()
        })}).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut is_winner: Vec<Vec<bool>> = rows_per_file.iter().map(|&n| vec![false; n as usize]).collect();
    for w in &winners { for &(f, r) in w { is_winner[f as usize][r as usize] = true; } }
    drop(winners);
    // Winner keys for the output order, borrowed from the narrow batches.
    let mut keys: Vec<(Option<&str>, Option<i64>, &str, u32, u32)> = Vec::with_capacity(3_300_000);
    for (f, bs) in batches.iter().enumerate() {
        let mut row = 0u32;
        for b in bs.iter() {
            let id = b.column_by_name("id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
            let pl = b.column_by_name("platform").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
            let dt = b.column_by_name("datetime").unwrap().as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
            for i in 0..b.num_rows() {
                if is_winner[f][row as usize] {
                    keys.push((if pl.is_null(i) { None } else { Some(pl.value(i)) }, if dt.is_null(i) { None } else { Some(dt.value(i)) }, id.value(i), f as u32, row));
                }
                row += 1;
            }
        }
    }
    let cmp = |a: &(Option<&str>, Option<i64>, &str, u32, u32), b: &(Option<&str>, Option<i64>, &str, u32, u32)| {
        let p = match (a.0, b.0) { (Some(x), Some(y)) => x.cmp(y), (Some(_), None) => std::cmp::Ordering::Less, (None, Some(_)) => std::cmp::Ordering::Greater, _ => std::cmp::Ordering::Equal };
        p.then_with(|| match (a.1, b.1) { (Some(x), Some(y)) => x.cmp(&y), (Some(_), None) => std::cmp::Ordering::Less, (None, Some(_)) => std::cmp::Ordering::Greater, _ => std::cmp::Ordering::Equal })
            .then_with(|| a.2.cmp(b.2))
    };
    {
        let mid = keys.len() / 2;
        let (l, r) = keys.split_at_mut(mid);
        std::thread::scope(|s| { s.spawn(|| l.sort_unstable_by(cmp)); r.sort_unstable_by(cmp); });
    }
    let mid = keys.len() / 2;
    let mut ranks: Vec<Vec<u32>> = rows_per_file.iter().map(|&n| vec![u32::MAX; n as usize]).collect();
    let (mut i, mut j, mut r) = (0usize, mid, 0u32);
    while i < mid || j < keys.len() {
        let take_left = j >= keys.len() || (i < mid && cmp(&keys[i], &keys[j]) != std::cmp::Ordering::Greater);
        let k = if take_left { i += 1; &keys[i - 1] } else { j += 1; &keys[j - 1] };
        ranks[k.3 as usize][k.4 as usize] = r;
        r += 1;
    }
    let rows_out = keys.len() as u32;
    drop(keys);
    drop(guards);
    drop(narrow);
    let t2 = Instant::now();

    // 3. Scatter the winners by rank range into lz4 Arrow IPC, one file per lane and range.
    let parts = ((rows_out + chunk_rows - 1) / chunk_rows) as usize;
    let ipc_opts = IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME)).unwrap();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for lane in 0..lanes {
            let ranks = &ranks; let files = &files; let next = &next; let ipc_opts = ipc_opts.clone();
            s.spawn(move || {
                let mut writers: Vec<Option<FileWriter<File>>> = (0..parts).map(|_| None).collect();
                let mut pending: Vec<Vec<RecordBatch>> = (0..parts).map(|_| vec![]).collect();
                let mut pending_rows = vec![0usize; parts];
                let flush = |k: usize, pending: &mut Vec<Vec<RecordBatch>>, writers: &mut Vec<Option<FileWriter<File>>>| {
                    if pending[k].is_empty() { return; }
                    let b = concat_batches(&pending[k][0].schema(), &pending[k]).unwrap();
                    pending[k].clear();
                    if writers[k].is_none() {
                        let f = File::create(format!("{}/p{}_l{}.arrow", work, k, lane)).unwrap();
                        writers[k] = Some(FileWriter::try_new_with_options(f, &b.schema(), ipc_opts.clone()).unwrap());
                    }
                    writers[k].as_mut().unwrap().write(&b).unwrap();
                };
                loop {
                    let f = next.fetch_add(1, Ordering::SeqCst);
                    if f >= files.len() { break; }
                    let r = ParquetRecordBatchReaderBuilder::try_new(File::open(&files[f]).unwrap()).unwrap().with_batch_size(8192).build().unwrap();
                    let mut base = 0usize;
                    for b in r {
                        let b = b.unwrap();
                        let mut by_part: Vec<Vec<u32>> = (0..parts).map(|_| vec![]).collect();
                        let mut rk: Vec<Vec<u32>> = (0..parts).map(|_| vec![]).collect();
                        for i in 0..b.num_rows() {
                            let r = ranks[f][base + i];
                            if r == u32::MAX { continue; }
                            let k = (r / chunk_rows) as usize;
                            by_part[k].push(i as u32);
                            rk[k].push(r);
                        }
                        base += b.num_rows();
                        for k in 0..parts {
                            if by_part[k].is_empty() { continue; }
                            let taken = take_record_batch(&b, &UInt32Array::from(std::mem::take(&mut by_part[k]))).unwrap();
                            let mut cols: Vec<ArrayRef> = taken.columns().to_vec();
                            cols.push(Arc::new(UInt32Array::from(std::mem::take(&mut rk[k]))));
                            let mut fields: Vec<Field> = taken.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
                            fields.push(Field::new("__rank", DataType::UInt32, false));
                            let sch = Arc::new(Schema::new(fields));
                            let nb = RecordBatch::try_new(sch, cols).unwrap();
                            pending_rows[k] += nb.num_rows();
                            pending[k].push(nb);
                            if pending_rows[k] >= 4096 { flush(k, &mut pending, &mut writers); pending_rows[k] = 0; }
                        }
                    }
                }
                for k in 0..parts { flush(k, &mut pending, &mut writers); }
                for w in writers.iter_mut() { if let Some(w) = w { w.finish().unwrap(); } }
            });
        }
    });
    let t3 = Instant::now();

    // 4. Each range: read its IPC files, sort by rank, write zstd Parquet; ranges on `lanes` threads.
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zlevel).unwrap()))
        .set_max_row_group_size(rg_rows)
        .build();
    let next = AtomicUsize::new(0);
    let out_rows = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..lanes {
            let props = props.clone(); let next = &next; let out_rows = &out_rows;
            s.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= parts { break; }
                let mut batches = vec![];
                for lane in 0..lanes {
                    let p = format!("{}/p{}_l{}.arrow", work, k, lane);
                    if let Ok(f) = File::open(&p) {
                        for b in FileReader::try_new(f, None).unwrap() { batches.push(b.unwrap()); }
                        std::fs::remove_file(&p).unwrap();
                    }
                }
                if batches.is_empty() { continue; }
                let all = concat_batches(&batches[0].schema(), &batches).unwrap();
                drop(batches);
                let rank_col = all.num_columns() - 1;
                let idx = sort_to_indices(all.column(rank_col), None, None).unwrap();
                let sorted = take_record_batch(&all, &idx).unwrap();
                drop(all);
                let sorted = sorted.project(&(0..rank_col).collect::<Vec<_>>()).unwrap();
                let f = File::create(format!("{}/chunk_{:05}.parquet", work, k)).unwrap();
                let mut w = ArrowWriter::try_new(f, sorted.schema(), Some(props.clone())).unwrap();
                w.write(&sorted).unwrap();
                w.close().unwrap();
                out_rows.fetch_add(sorted.num_rows(), Ordering::SeqCst);
            });
        }
    });
    let t4 = Instant::now();
    eprintln!(
        "rows_out {} (written {}) parts {}  narrow-read {:.2}s  dedup+rank {:.2}s  scatter {:.2}s  sort+write {:.2}s  total {:.2}s",
        rows_out, out_rows.load(Ordering::SeqCst), parts,
        (t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64(), (t3 - t2).as_secs_f64(), (t4 - t3).as_secs_f64(), (t4 - t0).as_secs_f64()
    );
}
