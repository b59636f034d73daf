use std::time::Duration;

use super::*;

fn payload(i: usize) -> Bytes {
    Bytes::from(format!("message {i:05} {}", "x".repeat(i % 50)))
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 10,
    }
}

async fn append_each(log: &Partition, range: std::ops::Range<usize>) {
    for i in range {
        log.append(vec![payload(i)]).await.unwrap();
    }
}

async fn read_all(log: &Partition) -> Vec<Record> {
    let mut records = Vec::new();
    let mut next = log.start();
    while next < log.high_water() {
        let batch = log.read(next, 100, 64 << 10).await.unwrap();
        next = batch.last().unwrap().offset + 1;
        records.extend(batch);
    }
    records
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn appended_records_read_back_in_order_with_offsets_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = Partition::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    let first = log.append(vec![payload(0), payload(1)]).await.unwrap();
    let second = log.append(vec![payload(2)]).await.unwrap();
    assert_eq!(first.first_offset, 0);
    assert_eq!(second.first_offset, 2);
    assert!(second.timestamp >= first.timestamp);
    assert_eq!(log.high_water(), 3);

    let records = log.read(0, 10, 1 << 20).await.unwrap();
    let payloads: Vec<_> = records.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, [payload(0), payload(1), payload(2)]);
    assert_eq!(log.read(1, 1, 1 << 20).await.unwrap()[0].offset, 1);
    assert!(log.read(3, 10, 1 << 20).await.unwrap().is_empty());
    assert!(matches!(
        log.read(4, 10, 1 << 20).await,
        Err(LogError::OffsetOutOfRange {
            offset: 4,
            start: 0,
            end: 3
        })
    ));
}

#[tokio::test]
async fn concurrent_appends_share_syncs_and_get_distinct_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Partition::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    let appends: Vec<_> = (0..64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(vec![payload(i)]).await.unwrap() })
        })
        .collect();
    let mut offsets = Vec::new();
    for append in appends {
        offsets.push(append.await.unwrap().first_offset);
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..64).collect::<Vec<u64>>());
    assert!(
        log.syncs() < 64,
        "64 concurrent appends took {} syncs",
        log.syncs()
    );
    assert_eq!(read_all(&log).await.len(), 64);
}

#[tokio::test]
async fn a_reopened_log_holds_every_record_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Partition::open(dir.path(), small_segments()).await.unwrap();
    append_each(&log, 0..300).await;
    drop(log);
    assert!(segment_files(dir.path()).len() > 3);

    let log = Partition::open(dir.path(), small_segments()).await.unwrap();
    assert_eq!(log.high_water(), 300);
    let records = read_all(&log).await;
    assert_eq!(records.len(), 300);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.offset, i as u64);
        assert_eq!(record.payload, payload(i));
    }
    // Appends go on from where the log ended.
    assert_eq!(
        log.append(vec![payload(300)]).await.unwrap().first_offset,
        300
    );
}

#[tokio::test]
async fn a_torn_write_at_the_end_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let log = Partition::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    append_each(&log, 0..10).await;
    drop(log);
    let tail = segment_files(dir.path()).pop().unwrap();
    let whole = std::fs::metadata(&tail).unwrap().len();
    // Half a record, as a write cut short by a crash leaves it.
    let mut torn = Vec::new();
    record::encode(&mut torn, 10, 10, 0, b"never acknowledged");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&tail)
        .unwrap();
    std::io::Write::write_all(&mut file, &torn[..torn.len() / 2]).unwrap();
    drop(file);

    let log = Partition::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    assert_eq!(log.high_water(), 10);
    assert_eq!(std::fs::metadata(&tail).unwrap().len(), whole);
    assert_eq!(
        log.append(vec![payload(10)]).await.unwrap().first_offset,
        10
    );
    assert_eq!(read_all(&log).await.len(), 11);
}

#[tokio::test]
async fn damage_before_the_last_synced_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Partition::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    append_each(&log, 0..10).await;
    drop(log);
    let tail = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&tail).unwrap();
    // A byte inside the third record's payload; valid records follow it.
    let third = Record::encoded_len(payload(0).len()) + Record::encoded_len(payload(1).len());
    bytes[third + record::HEADER + 2] ^= 0x40;
    std::fs::write(&tail, &bytes).unwrap();

    let opened = Partition::open(dir.path(), LogConfig::default()).await;
    assert!(
        matches!(opened, Err(LogError::Corrupt { position, .. }) if position == third as u64),
        "{opened:?}"
    );
    // Nothing was cut: the damaged file is left as it was for the operator.
    assert_eq!(std::fs::read(&tail).unwrap(), bytes);
}

#[tokio::test]
async fn a_last_batch_damaged_in_the_middle_is_cut_off_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = Partition::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    append_each(&log, 0..5).await;
    // One write of three records: the batch a crash could leave with its middle missing
    // while its last record reached the disk.
    log.append(vec![payload(5), payload(6), payload(7)])
        .await
        .unwrap();
    drop(log);
    let tail = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&tail).unwrap();
    let before: usize = (0..5).map(|i| Record::encoded_len(payload(i).len())).sum();
    let sixth = before + Record::encoded_len(payload(5).len());
    bytes[sixth + record::HEADER + 1] ^= 0x01;
    std::fs::write(&tail, &bytes).unwrap();

    let log = Partition::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    assert_eq!(log.high_water(), 5, "the whole unacknowledged batch goes");
    assert_eq!(std::fs::metadata(&tail).unwrap().len(), before as u64);
    assert_eq!(read_all(&log).await.len(), 5);
    assert_eq!(log.append(vec![payload(5)]).await.unwrap().first_offset, 5);
}

#[tokio::test]
async fn a_damaged_sealed_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Partition::open(dir.path(), small_segments()).await.unwrap();
    append_each(&log, 0..300).await;
    drop(log);
    let first = segment_files(dir.path()).remove(0);
    let len = std::fs::metadata(&first).unwrap().len();
    // Losing the end of a sealed segment is not a torn tail: later segments hold more.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    assert!(matches!(
        Partition::open(dir.path(), small_segments()).await,
        Err(LogError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn retention_deletes_whole_old_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = Partition::open(dir.path(), small_segments()).await.unwrap();
    append_each(&log, 0..300).await;
    let segments = segment_files(dir.path()).len();
    let size = log.size_bytes();

    // By size: keep at most half the bytes.
    let removed = log.apply_retention(0, None, Some(size / 2)).await.unwrap();
    assert!(removed > 0);
    assert!(log.size_bytes() <= size / 2);
    assert_eq!(segment_files(dir.path()).len(), segments - removed);
    let start = log.start();
    assert!(start > 0);
    assert!(matches!(
        log.read(0, 1, 100).await,
        Err(LogError::OffsetOutOfRange { offset: 0, .. })
    ));
    assert_eq!(log.read(start, 1, 100).await.unwrap()[0].offset, start);

    // By age: everything is older than a cutoff in the future, yet the last segment stays.
    let future = now_millis() + 60_000;
    log.apply_retention(future, Some(1), None).await.unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(log.high_water(), 300);
    assert_eq!(
        log.append(vec![payload(300)]).await.unwrap().first_offset,
        300
    );

    // And a reopened log starts where retention left it.
    let start = log.start();
    drop(log);
    let log = Partition::open(dir.path(), small_segments()).await.unwrap();
    assert_eq!(log.start(), start);
    assert_eq!(log.high_water(), 301);
}

#[tokio::test]
async fn a_time_finds_the_first_record_appended_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Partition::open(dir.path(), small_segments()).await.unwrap();
    append_each(&log, 0..100).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = log.append(vec![payload(100)]).await.unwrap();
    append_each(&log, 101..200).await;

    assert_eq!(log.offset_for_time(i64::MIN).await.unwrap(), 0);
    let found = log.offset_for_time(later.timestamp).await.unwrap();
    let records = read_all(&log).await;
    let expected = records
        .iter()
        .find(|r| r.timestamp >= later.timestamp)
        .unwrap();
    assert_eq!(found, expected.offset);
    assert!(found <= 100);
    assert_eq!(log.offset_for_time(i64::MAX).await.unwrap(), 200);
}

#[tokio::test]
async fn a_waiting_reader_is_woken_by_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = Partition::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    let mut watch = log.watch();
    let writer = log.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        writer.append(vec![payload(0)]).await.unwrap();
    });
    tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|&end| end > 0))
        .await
        .expect("no wake-up")
        .unwrap();
    assert_eq!(log.read(0, 10, 1 << 20).await.unwrap().len(), 1);
}

#[tokio::test]
async fn reads_respect_record_and_byte_limits_and_oversize_payloads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Partition::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    let big = Bytes::from(vec![7u8; 200 << 10]);
    log.append(vec![big.clone(), payload(1), payload(2)])
        .await
        .unwrap();

    // The first record always comes, even past the byte limit.
    let records = log.read(0, 10, 1).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload, big);
    assert_eq!(log.read(0, 2, 1 << 20).await.unwrap().len(), 2);
    assert_eq!(log.read(1, 10, 1 << 20).await.unwrap().len(), 2);

    let oversize = Bytes::from(vec![0u8; MAX_PAYLOAD + 1]);
    assert!(matches!(
        log.append(vec![oversize]).await,
        Err(LogError::PayloadTooLarge { .. })
    ));
    assert_eq!(log.high_water(), 3);
}
