;; A Faasm function in the text format: answers "Hello, INPUT!" (or
;; "Hello, world!" with no input). Upload it to a worker as it is (the
;; worker compiles WAT as well as wasm binaries):
;;   curl -X PUT --data-binary @examples/hello.wat http://127.0.0.1:8080/f/demo/hello
;;   curl -X POST -d faaslet http://127.0.0.1:8080/f/demo/hello
(module
  (import "env" "__faasm_read_input" (func $read_input (param i32 i32) (result i32)))
  (import "env" "__faasm_write_output" (func $write_output (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "Hello, ")
  (data (i32.const 64) "world")
  (func (export "main") (result i32)
    (local $n i32)
    ;; The input goes right after "Hello, " (at most 60,000 bytes).
    (local.set $n (call $read_input (i32.const 7) (i32.const 60000)))
    (if (i32.gt_u (local.get $n) (i32.const 60000))
      (then (local.set $n (i32.const 60000))))
    (if (i32.eqz (local.get $n))
      (then
        (memory.copy (i32.const 7) (i32.const 64) (i32.const 5))
        (local.set $n (i32.const 5))))
    (i32.store8 (i32.add (i32.const 7) (local.get $n)) (i32.const 0x21))
    (call $write_output (i32.const 0) (i32.add (local.get $n) (i32.const 8)))
    (i32.const 0)))
