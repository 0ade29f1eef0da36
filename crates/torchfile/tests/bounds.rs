//! Hostile pickles and archives, built by hand: whatever a file declares, the
//! reader's time, memory and recursion stay bounded, and going past a bound is
//! an error naming the file and the limit.

use saepipe_torchfile::{
    MAX_BROADCAST_ELEMENTS, MAX_CONTAINER_LEN, MAX_DEPTH, MAX_OPCODE_BYTES, MAX_PICKLE_OPS, MAX_VALUE_BYTES,
    MAX_VALUE_NODES, StorageDtype, TensorRef, TorchArchive, UnpickleOptions, Value, unpickle, unpickle_with,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Counts the heap bytes live on this thread and their peak, so a test sees
/// what one call cost, whatever the tests on other threads allocate.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        note(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `f()`, the most heap it held at once beyond what was live before, and how
/// much more is live after (its result included).
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, isize) {
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let out = f();
    let peak = PEAK.with(Cell::get) - before;
    (out, peak as usize, LIVE.with(Cell::get) - before)
}

const PROTO2: [u8; 2] = [0x80, 2];

fn put(p: &mut Vec<u8>, i: u32) {
    p.push(b'r'); // LONG_BINPUT
    p.extend(i.to_le_bytes());
}

fn get(p: &mut Vec<u8>, i: u32) {
    p.push(b'j'); // LONG_BINGET
    p.extend(i.to_le_bytes());
}

fn text(p: &mut Vec<u8>, s: &str) {
    p.push(b'X'); // BINUNICODE
    p.extend((s.len() as u32).to_le_bytes());
    p.extend(s.as_bytes());
}

fn global(p: &mut Vec<u8>, module: &str, name: &str) {
    p.push(b'c');
    p.extend(format!("{module}\n{name}\n").as_bytes());
}

fn int(p: &mut Vec<u8>, v: u64) {
    p.extend([0x8a, 8]); // LONG1 of 8 bytes
    p.extend(v.to_le_bytes());
}

/// `l0 = []`, `l1 = [l0, l0]`, …, `ln = [ln-1, ln-1]`: `levels` levels of memo
/// references, whose expansion into a tree has 2^(levels + 1) - 1 lists.
fn laughs(levels: u32) -> Vec<u8> {
    let mut p = PROTO2.to_vec();
    p.push(b']');
    put(&mut p, 0);
    p.push(b'0');
    for i in 1..=levels {
        p.extend([b']', b'(']);
        get(&mut p, i - 1);
        get(&mut p, i - 1);
        p.push(b'e'); // APPENDS
        put(&mut p, i);
        p.push(b'0');
    }
    get(&mut p, levels);
    p.push(b'.');
    p
}

#[test]
fn shared_references_stay_one_allocation() {
    let p = laughs(12);
    let (v, peak, _) = measured(|| unpickle(&p, "laughs.pt").unwrap());
    // 13 lists, not 8191.
    assert!(peak < 16 << 10, "{peak} bytes");
    let mut level = &v;
    let mut depth = 0;
    while let Value::List(items) = level {
        if items.is_empty() {
            break;
        }
        let [Value::List(a), Value::List(b)] = &items[..] else { panic!("{level:?}") };
        assert!(Arc::ptr_eq(a, b), "level {depth}");
        level = &items[0];
        depth += 1;
    }
    assert_eq!(depth, 12);
}

#[test]
fn billion_laughs_is_refused_at_once_by_the_tree_size_limit() {
    let p = laughs(30);
    assert!(p.len() < 753, "{}", p.len());
    let (e, peak, live) = measured(|| unpickle(&p, "dir/coder.pt").unwrap_err().to_string());
    assert!(peak < 64 << 10, "{peak} bytes");
    assert_eq!(live as usize, e.capacity());
    assert!(
        e.starts_with("dir/coder.pt: ")
            && e.contains(&format!("more than {MAX_VALUE_NODES} nodes"))
            && e.contains("MAX_VALUE_NODES"),
        "{e}"
    );
}

/// A torch archive holding `pickle` as its data.pkl and one storage `0`.
fn archive(test: &str, pickle: &[u8], storage: &[u8]) -> PathBuf {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [("archive/data.pkl", pickle), ("archive/byteorder", b"little"), ("archive/data/0", storage)] {
        z.start_file(name, stored).unwrap();
        z.write_all(data).unwrap();
    }
    let path = std::env::temp_dir().join(format!("saepipe-torchfile-bounds-{}-{test}.pt", std::process::id()));
    std::fs::write(&path, z.finish().unwrap().into_inner()).unwrap();
    path
}

#[test]
fn billion_laughs_coder_file_is_refused_naming_it() {
    let path = archive("laughs", &laughs(30), &[]);
    let e = TorchArchive::open_with(&path, UnpickleOptions { allow_objects: true }).err().unwrap().to_string();
    assert!(e.starts_with(&format!("{}: ", path.display())) && e.contains("MAX_VALUE_NODES"), "{e}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_long_string_referenced_many_times_is_counted_each_time() {
    // s = 'x' * 2**20; [s, s, …] with 300 references: 300 MiB as a tree.
    let mut p = PROTO2.to_vec();
    p.extend([b']', b'(']);
    text(&mut p, &"x".repeat(1 << 20));
    put(&mut p, 0);
    for _ in 1..300 {
        get(&mut p, 0);
    }
    p.extend([b'e', b'.']);
    let (e, peak, _) = measured(|| unpickle(&p, "strings.pt").unwrap_err().to_string());
    assert!(peak < 2 << 20, "{peak} bytes");
    assert!(
        e.starts_with("strings.pt: ")
            && e.contains(&format!("more than {MAX_VALUE_BYTES} bytes"))
            && e.contains("MAX_VALUE_BYTES"),
        "{e}"
    );

    // The same string as a class name over and over (object mode).
    let mut p = PROTO2.to_vec();
    text(&mut p, &"m".repeat(1 << 20));
    put(&mut p, 0);
    for _ in 0..300 {
        get(&mut p, 0);
        get(&mut p, 0);
        p.extend([0x93, b'0']); // STACK_GLOBAL, POP
    }
    p.extend([b'N', b'.']);
    let e = unpickle_with(&p, "names.pt", UnpickleOptions { allow_objects: true }).unwrap_err().to_string();
    assert!(e.starts_with("names.pt: ") && e.contains("MAX_VALUE_BYTES"), "{e}");
}

#[test]
fn declared_lengths_beyond_the_limit_or_the_input_are_errors_not_allocations() {
    for (op, name) in [(0x8du8, "BINUNICODE8"), (0x8e, "BINBYTES8")] {
        let mut p = PROTO2.to_vec();
        p.push(op);
        p.extend((1u64 << 40).to_le_bytes());
        p.extend(b"abc.");
        let (e, peak, _) = measured(|| unpickle(&p, "big.pt").unwrap_err().to_string());
        assert!(peak < 4 << 10, "{peak} bytes");
        assert_eq!(
            e,
            format!(
                "big.pt: {name} declares 1099511627776 bytes, over the limit of {MAX_OPCODE_BYTES} bytes per opcode (MAX_OPCODE_BYTES)"
            )
        );
    }
    // Within the limit but past the end of the input.
    for (op, name) in [(b'X', "BINUNICODE"), (b'B', "BINBYTES"), (b'T', "BINSTRING"), (0x8b, "LONG4")] {
        let mut p = PROTO2.to_vec();
        p.push(op);
        p.extend(100u32.to_le_bytes());
        p.extend(b"ab.");
        let e = unpickle(&p, "short.pt").unwrap_err().to_string();
        assert_eq!(e, format!("short.pt: {name} declares 100 bytes but only 3 remain in the pickle"));
    }
    let mut p = PROTO2.to_vec();
    p.push(b'B');
    p.extend(u32::MAX.to_le_bytes());
    let e = unpickle(&p, "b.pt").unwrap_err().to_string();
    assert!(e.contains("BINBYTES declares 4294967295 bytes") && e.contains("MAX_OPCODE_BYTES"), "{e}");
}

/// `n` lists, each appended to the one before: nested `n` deep.
fn nested_lists(n: usize) -> Vec<u8> {
    let mut p = PROTO2.to_vec();
    p.extend(std::iter::repeat_n(b']', n));
    p.extend(std::iter::repeat_n(b'a', n - 1));
    p.push(b'.');
    p
}

#[test]
fn deep_nesting_fails_cleanly_without_recursion() {
    let deep = |e: &str, file: &str| {
        e.starts_with(&format!("{file}: "))
            && e.contains(&format!("more than {MAX_DEPTH} levels deep"))
            && e.contains("MAX_DEPTH")
    };
    // A million nested lists, then a million nested tuples (TUPLE1 of TUPLE1 …):
    // refused, and torn down without a recursive drop.
    let p = nested_lists(1_000_000);
    let (e, _, live) = measured(|| unpickle(&p, "deep.pt").unwrap_err().to_string());
    assert!(deep(&e, "deep.pt"), "{e}");
    assert_eq!(live as usize, e.capacity());
    let mut p = PROTO2.to_vec();
    p.push(b'N');
    p.extend(std::iter::repeat_n(0x85, 1_000_000));
    p.push(b'.');
    let e = unpickle(&p, "tuples.pt").unwrap_err().to_string();
    assert!(deep(&e, "tuples.pt"), "{e}");

    // The limit is exact.
    let v = unpickle(&nested_lists(MAX_DEPTH), "x").unwrap();
    let mut levels = 0;
    let mut at = &v;
    while let Value::List(items) = at {
        levels += 1;
        match items.first() {
            Some(inner) => at = inner,
            None => break,
        }
    }
    assert_eq!(levels, MAX_DEPTH);
    assert!(deep(&unpickle(&nested_lists(MAX_DEPTH + 1), "x").unwrap_err().to_string(), "x"));

    // A chain counted first near the top is still too deep where it is
    // referenced again further down: [c, [[… [c] …]]] with c 150 deep.
    let mut p = PROTO2.to_vec();
    p.extend(std::iter::repeat_n(b']', 150));
    p.extend(std::iter::repeat_n(b'a', 149));
    put(&mut p, 0);
    p.push(b'0');
    p.extend([b']', b'(']);
    get(&mut p, 0);
    p.extend(std::iter::repeat_n(b']', 100));
    get(&mut p, 0);
    p.extend(std::iter::repeat_n(b'a', 100));
    p.extend([b'e', b'.']);
    assert!(deep(&unpickle(&p, "dag.pt").unwrap_err().to_string(), "dag.pt"));
}

#[test]
fn cycles_are_refused_and_freed() {
    // l = []; l.append(l)
    let p = [0x80, 2, b']', b'2', b'a', b'.'];
    let (e, _, live) = measured(|| unpickle(&p, "cycle.pt").unwrap_err().to_string());
    assert!(e.starts_with("cycle.pt: ") && e.contains("(or is cyclic)"), "{e}");
    assert_eq!(live as usize, e.capacity(), "the cycle leaked");
    // o = Cfg(); o.__dict__ = {'me': o}, popped before the end: freed too.
    let mut p = PROTO2.to_vec();
    global(&mut p, "m", "Cfg");
    p.extend([b')', 0x81]); // EMPTY_TUPLE, NEWOBJ
    put(&mut p, 0);
    p.push(b'}');
    text(&mut p, "me");
    get(&mut p, 0);
    p.extend([b's', b'b', b'0', b'N', b'.']); // SETITEM, BUILD, POP
    let (v, _, live) = measured(|| unpickle_with(&p, "obj.pt", UnpickleOptions { allow_objects: true }).unwrap());
    assert_eq!(v, Value::None);
    assert_eq!(live, 0, "the cycle leaked");
}

#[test]
fn operation_and_container_limits() {
    // set(t) 2,000 times for a memoized tuple of 10,000 items: 20 million copies.
    let mut p = PROTO2.to_vec();
    p.extend([b'(', b'N']);
    p.extend(std::iter::repeat_n(b'2', 9_999));
    p.push(b't');
    put(&mut p, 0);
    p.push(b'0');
    global(&mut p, "builtins", "set");
    put(&mut p, 1);
    p.push(b'0');
    for _ in 0..2_000 {
        get(&mut p, 1);
        get(&mut p, 0);
        p.extend([0x85, b'R', b'0']); // TUPLE1, REDUCE, POP
    }
    p.extend([b'N', b'.']);
    let e = unpickle(&p, "ops.pt").unwrap_err().to_string();
    assert!(
        e.starts_with("ops.pt: ")
            && e.contains(&format!("more than {MAX_PICKLE_OPS} operations"))
            && e.contains("MAX_PICKLE_OPS"),
        "{e}"
    );

    // A list one item over the limit.
    let mut p = PROTO2.to_vec();
    p.extend([b']', b'(', b'N']);
    p.extend(std::iter::repeat_n(b'2', MAX_CONTAINER_LEN));
    p.extend([b'e', b'.']);
    let e = unpickle(&p, "long.pt").unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "long.pt: list of {} items is over the limit of {MAX_CONTAINER_LEN} items per container (MAX_CONTAINER_LEN)",
            MAX_CONTAINER_LEN + 1
        )
    );
}

/// `{name: tensor, …}` over storage `0` (float32, 4 elements), each tensor
/// `(name, storage offset, size, stride)`, pickled as torch.save does.
fn tensors(list: &[(&str, u64, &[u64], &[u64])]) -> Vec<u8> {
    let mut p = PROTO2.to_vec();
    p.extend([b'}', b'(']);
    for (name, offset, size, stride) in list {
        text(&mut p, name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.extend([b'(', b'(']);
        text(&mut p, "storage");
        global(&mut p, "torch", "FloatStorage");
        text(&mut p, "0");
        text(&mut p, "cpu");
        p.extend([b'K', 4, b't', b'Q']); // numel, TUPLE, BINPERSID
        int(&mut p, *offset);
        for dims in [size, stride] {
            p.push(b'(');
            dims.iter().for_each(|&d| int(&mut p, d));
            p.push(b't');
        }
        p.push(0x89); // requires_grad=False
        global(&mut p, "collections", "OrderedDict");
        p.extend([b')', b'R', b't', b'R']);
    }
    p.extend([b'u', b'.']);
    p
}

#[test]
fn tensor_views_are_checked_against_their_storage() {
    let storage: Vec<u8> = [1f32, 2., 3., 4.].iter().flat_map(|x| x.to_le_bytes()).collect();
    let path = archive(
        "views",
        &tensors(&[
            ("ok", 0, &[2, 2], &[2, 1]),
            ("transposed", 0, &[2, 2], &[1, 2]),
            ("broadcast", 1, &[3], &[0]),
            ("empty", 9, &[0, 1 << 40], &[1, 1]),
            ("long", 0, &[8], &[1]),
            ("offset", 3, &[2], &[1]),
            ("strided", 0, &[2, 2], &[1, 1 << 40]),
            ("flood", 0, &[1 << 40], &[0]),
        ]),
        &storage,
    );
    let a = TorchArchive::open(&path).unwrap();
    let file = path.display().to_string();
    let t = |name: &str| a.root.get(name).and_then(Value::as_tensor).unwrap();
    assert_eq!(a.tensor_f32(t("ok"), "ok").unwrap(), [1., 2., 3., 4.]);
    assert_eq!(a.tensor_f32(t("transposed"), "transposed").unwrap(), [1., 3., 2., 4.]);
    assert_eq!(a.tensor_f32(t("broadcast"), "broadcast").unwrap(), [2., 2., 2.]);
    assert!(a.tensor_f32(t("empty"), "empty").unwrap().is_empty());
    for (name, last) in [("long", 7u64), ("offset", 4), ("strided", (1 << 40) + 1)] {
        let (e, peak, _) = measured(|| a.tensor_f32(t(name), name).unwrap_err().to_string());
        assert!(peak < 4 << 10, "{peak} bytes");
        assert_eq!(
            e,
            format!(
                "{file}: tensor `{name}`: view reaches element {last} of storage `0`, which holds 4 elements (16 bytes in the file)"
            )
        );
    }
    let (e, peak, _) = measured(|| a.tensor_f32(t("flood"), "flood").unwrap_err().to_string());
    assert!(peak < 4 << 10, "{peak} bytes");
    assert!(
        e.starts_with(&format!("{file}: tensor `flood`: view of 1099511627776 elements"))
            && e.contains(&format!("{MAX_BROADCAST_ELEMENTS}"))
            && e.contains("MAX_BROADCAST_ELEMENTS"),
        "{e}"
    );

    // Sizes whose element count or extent overflow, built by hand.
    for (shape, stride, offset) in
        [(vec![1 << 40, 1 << 40], vec![1, 1], 0), (vec![3], vec![usize::MAX], 0), (vec![2], vec![1], usize::MAX)]
    {
        let bad = TensorRef { storage_key: "0".into(), dtype: StorageDtype::F32, offset, shape, stride };
        let e = a.tensor_f32(&bad, "bad").unwrap_err().to_string();
        assert!(e.starts_with(&format!("{file}: tensor `bad`: size ")) && e.contains("overflows"), "{e}");
    }
    let bad =
        TensorRef { storage_key: "9".into(), dtype: StorageDtype::F32, offset: 0, shape: vec![1], stride: vec![1] };
    assert_eq!(
        a.tensor_f32(&bad, "bad").unwrap_err().to_string(),
        format!("{file}: tensor `bad`: storage `9` missing from the archive")
    );
    std::fs::remove_file(&path).unwrap();

    // In the pickle itself, an overflowing size is refused when the file is opened.
    let path = archive("overflow", &tensors(&[("w", 0, &[1 << 32, 1 << 32, 1 << 32], &[1, 1, 1])]), &storage);
    let e = TorchArchive::open(&path).err().unwrap().to_string();
    assert!(
        e.starts_with(&format!(
            "{}: tensor on storage `0` with size [4294967296, 4294967296, 4294967296]",
            path.display()
        )) && e.contains("overflows"),
        "{e}"
    );
    std::fs::remove_file(&path).unwrap();
}
