/* Compiled by GCC's cc1 for AVR (WASI build) in run.sh's slow cases. */
#define PORTB (*(volatile unsigned char *)0x25)
static int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
int main(void) {
    for (unsigned char i = 0;; i++) PORTB = (unsigned char)fib(i & 7);
}
