//! Reservations and linear memories.

mod common;

use faaslet_sfi::{host_page_size, LinearMemory, MemoryError, Reservation, WASM_PAGE};

#[test]
fn reservation_rounds_and_protects() {
    let page = host_page_size();
    let r = Reservation::new(3 * page + 1).unwrap();
    assert_eq!(r.len(), 4 * page);
    assert_eq!(r.base() as usize % page, 0);
    r.make_accessible(page, 2 * page).unwrap();
    // SAFETY: pages 1 and 2 of the reservation were just made accessible.
    unsafe {
        *r.base().add(page) = 7;
        *r.base().add(3 * page - 1) = 9;
        assert_eq!(*r.base().add(page), 7);
    }
    r.discard(page, page).unwrap();
    // SAFETY: page 1 is still mapped read-write; discard only zero-filled it.
    unsafe {
        assert_eq!(*r.base().add(page), 0, "discard zero-fills");
        assert_eq!(
            *r.base().add(3 * page - 1),
            9,
            "outside the discarded range"
        );
        *r.base().add(page) = 1; // still writable after discard
    }
    r.make_inaccessible(page, 2 * page).unwrap();
    r.make_accessible(page, page).unwrap();
    // SAFETY: page 1 was made accessible again just above.
    unsafe { assert_eq!(*r.base().add(page), 0, "inaccessible drops contents") };

    assert!(matches!(
        r.make_accessible(1, page),
        Err(MemoryError::Unaligned { .. })
    ));
    assert!(matches!(
        r.make_accessible(3 * page, 2 * page),
        Err(MemoryError::OutOfBounds { .. })
    ));
    assert!(matches!(
        r.make_accessible(page, usize::MAX),
        Err(MemoryError::OutOfBounds { .. })
    ));
    assert!(matches!(
        Reservation::new(usize::MAX),
        Err(MemoryError::TooLarge { .. })
    ));
    assert_eq!(Reservation::new(0).unwrap().len(), page);
}

#[test]
fn huge_reservation_is_cheap() {
    // 64 GiB of address space, like an 8 GiB-guarded 32-bit memory would use.
    let r = Reservation::new(64 << 30).unwrap();
    r.make_accessible(0, WASM_PAGE).unwrap();
    // SAFETY: page 0 was made accessible just above.
    unsafe { *r.base() = 1 };
}

#[test]
fn grow_within_limits_never_moves() {
    let mut m = LinearMemory::new(WASM_PAGE, Some(4 * WASM_PAGE), 16 * WASM_PAGE).unwrap();
    let base = m.base();
    assert_eq!(m.len(), WASM_PAGE);
    assert_eq!(m.reserved(), 16 * WASM_PAGE);
    assert_eq!(m.limit(), 4 * WASM_PAGE);
    m.as_mut_slice()[WASM_PAGE - 1] = 5;
    for pages in 2..=4 {
        m.grow_to(pages * WASM_PAGE).unwrap();
        assert_eq!(m.base(), base);
        assert_eq!(m.len(), pages * WASM_PAGE);
        let s = m.as_mut_slice();
        assert_eq!(s[s.len() - 1], 0, "new bytes are zero");
        let n = s.len();
        s[n - 1] = 1;
    }
    assert_eq!(m.as_slice()[WASM_PAGE - 1], 5, "contents survive growth");
    assert!(
        matches!(m.grow_to(5 * WASM_PAGE), Err(MemoryError::TooLarge { requested, limit })
        if requested == 5 * WASM_PAGE && limit == 4 * WASM_PAGE)
    );
    assert!(matches!(
        m.grow_to(WASM_PAGE),
        Err(MemoryError::Shrink { .. })
    ));
    assert_eq!(
        m.len(),
        4 * WASM_PAGE,
        "failed grow leaves the memory unchanged"
    );
    assert_eq!(m.base(), base);
}

#[test]
fn grow_limited_by_reservation() {
    let mut m = LinearMemory::new(0, None, 2 * WASM_PAGE).unwrap();
    assert!(m.is_empty());
    assert!(m.as_slice().is_empty());
    m.grow_to(2 * WASM_PAGE).unwrap();
    assert!(
        matches!(m.grow_to(3 * WASM_PAGE), Err(MemoryError::TooLarge { limit, .. }) if limit == 2 * WASM_PAGE)
    );
    // Maximum above the reservation is clamped.
    let m = LinearMemory::new(0, Some(100 * WASM_PAGE), 2 * WASM_PAGE).unwrap();
    assert_eq!(m.limit(), 2 * WASM_PAGE);
}

#[test]
fn bad_construction() {
    assert!(matches!(
        LinearMemory::new(2 * WASM_PAGE, None, WASM_PAGE),
        Err(MemoryError::TooLarge { .. })
    ));
    assert!(matches!(
        LinearMemory::new(2 * WASM_PAGE, Some(WASM_PAGE), 8 * WASM_PAGE),
        Err(MemoryError::TooLarge { .. })
    ));
}

#[cfg(target_arch = "x86_64")]
#[test]
fn bytes_beyond_len_are_inaccessible() {
    use faaslet_sfi::catch_traps;
    let code = common::Code::new();
    let _reg = code.register_all();
    let mut m = LinearMemory::new(WASM_PAGE, None, 4 * WASM_PAGE).unwrap();
    m.as_mut_slice()[WASM_PAGE - 1] = 0x5a;
    let base = m.base();
    let mut v = 0;
    // SAFETY: in-bounds offset of the reservation (pointer arithmetic only; the load runs under catch_traps).
    assert!(catch_traps(|| v = code.load(unsafe { base.add(WASM_PAGE - 1) })).is_ok());
    assert_eq!(v, 0x5a);
    for off in [WASM_PAGE, 2 * WASM_PAGE + 17, 4 * WASM_PAGE - 1] {
        // SAFETY: offsets inside the memory's reservation (pointer arithmetic only; loads run under catch_traps).
        let addr = unsafe { base.add(off) };
        let fault = catch_traps(|| {
            code.load(addr);
        })
        .unwrap_err();
        assert_eq!(fault.signal, libc::SIGSEGV);
        assert_eq!(fault.fault_addr, addr as usize);
    }
    // The canary page in front of the memory is a guard too.
    let fault = catch_traps(|| {
        // SAFETY: one byte before the memory is the reservation's canary page (arithmetic only; the load is caught).
        code.load(unsafe { base.sub(1) });
    })
    .unwrap_err();
    assert_eq!(fault.fault_addr, base as usize - 1);

    m.grow_to(2 * WASM_PAGE).unwrap();
    // SAFETY: inside the reservation (arithmetic only).
    let addr = unsafe { base.add(WASM_PAGE) };
    assert!(catch_traps(|| v = code.load(addr)).is_ok());
    assert_eq!(v, 0);
}
