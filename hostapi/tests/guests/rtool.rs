//! A Rust WASI program for faaslet's WASI tests, built with
//! `rustc --target wasm32-wasip1 -O rtool.rs`. It exercises Rust std's own
//! use of WASI (different from wasi-libc's C stdio).
use std::io::{Read, Seek, SeekFrom, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("fs") => fs(&args[2]),
        Some("env") => {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            println!("args {:?}", &args[2..]);
            println!("vars {vars:?}");
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input).unwrap();
            println!("stdin {:?}", input.to_uppercase());
            let t = std::time::Instant::now();
            std::thread::sleep(std::time::Duration::from_millis(15));
            println!("slept {}", t.elapsed() >= std::time::Duration::from_millis(15));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            println!("epoch>2020 {}", now.as_secs() > 1_577_836_800);
            eprintln!("to stderr");
            std::process::exit(3);
        }
        Some("escape") => {
            for p in &args[2..] {
                match std::fs::read(p) {
                    Ok(_) => println!("{p}: read"),
                    Err(e) => println!("{p}: {:?}", e.kind()),
                }
            }
        }
        Some("panic") => panic!("guest panic"),
        Some("tree") => tree(&args[2]),
        Some("serve") => serve(),
        _ => std::process::exit(2),
    }
}

fn fs(root: &str) {
    let d = format!("{root}/x/y/z");
    std::fs::create_dir_all(&d).unwrap();
    let f = format!("{d}/data.bin");
    let mut file = std::fs::File::create(&f).unwrap();
    for i in 0..1000u32 {
        file.write_all(&i.to_le_bytes()).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);
    let meta = std::fs::metadata(&f).unwrap();
    println!("size {} file {} dir {}", meta.len(), meta.is_file(), meta.is_dir());
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&f).unwrap();
    file.seek(SeekFrom::Start(400)).unwrap();
    let mut b = [0u8; 4];
    file.read_exact(&mut b).unwrap();
    println!("at 400: {}", u32::from_le_bytes(b));
    file.seek(SeekFrom::End(-4)).unwrap();
    file.write_all(&7u32.to_le_bytes()).unwrap();
    file.set_len(8).unwrap();
    drop(file);
    println!("after set_len {:?}", std::fs::read(&f).unwrap());
    std::fs::rename(&f, format!("{root}/x/moved.bin")).unwrap();
    std::fs::write(format!("{root}/x/note.txt"), "note").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(format!("{root}/x"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            format!("{}:{}", e.file_name().to_string_lossy(), e.file_type().unwrap().is_dir())
        })
        .collect();
    names.sort();
    println!("listing {names:?}");
    std::fs::remove_dir_all(format!("{root}/x")).unwrap();
    println!("exists after remove {}", std::path::Path::new(&format!("{root}/x")).exists());
}

/// Walks the tree under `root` (read_dir, metadata), prints it sorted, then
/// removes `root/victim` with remove_dir_all and says whether it is gone:
/// std opens every directory on the way with full rights.
fn tree(root: &str) {
    fn walk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            let md = e.metadata().unwrap();
            if md.is_dir() {
                out.push(format!("{name}/"));
                walk(&e.path(), &format!("{name}/"), out);
            } else {
                out.push(format!("{name} {}", md.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(std::path::Path::new(root), "", &mut out);
    out.sort();
    for l in &out {
        println!("{l}");
    }
    let victim = format!("{root}/victim");
    std::fs::remove_dir_all(&victim).unwrap();
    println!("victim exists {}", std::path::Path::new(&victim).exists());
}

/// Serves one connection on the listener the host handed in as fd 3:
/// reads until the peer shuts its side, answers with the bytes upper-cased.
fn serve() {
    use std::os::wasi::io::FromRawFd;
    // SAFETY: the host hands a listening socket in as descriptor 3.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(3) };
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    conn.write_all(&got.to_ascii_uppercase()).unwrap();
    conn.shutdown(std::net::Shutdown::Both).unwrap();
    println!("served {} bytes", got.len());
}
