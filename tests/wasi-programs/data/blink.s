    .section .text
    .global main
main:
    ldi r16, 0xff
    out 0x04, r16
loop:
    inc r17
    out 0x05, r17
    rcall delay
    rjmp loop
delay:
    ldi r18, 200
1:  dec r18
    brne 1b
    ret
