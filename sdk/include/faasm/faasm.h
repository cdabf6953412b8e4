/*
 * faasm.h: the Faasm function API for faaslet guests (C, wasm32-wasi).
 *
 * The __faasm_* calls are host functions imported from module "env", with
 * the names and shapes of Faasm's guest library, so Faasm functions compile
 * against this header unchanged. The faasm* wrappers below are the
 * convenience API Faasm users know; they live in sdk/src/faasm.c, which
 * must be compiled into every function (see sdk/README.md).
 *
 * Pointers are addresses in the function's own memory; lengths are bytes.
 * The host checks every pointer and length: a bad one traps the function.
 */
#ifndef FAASM_FAASM_H
#define FAASM_FAASM_H

#ifdef __cplusplus
extern "C" {
#endif

#define FAASM_IMPORT(name) __attribute__((import_module("env"), import_name(#name)))

/* ---- Host interface (Faasm's host_interface.h) ---- */

/* Input and output. */
FAASM_IMPORT(__faasm_read_input)
long __faasm_read_input(unsigned char *buffer, long bufferLen);
FAASM_IMPORT(__faasm_write_output)
void __faasm_write_output(const unsigned char *output, long outputLen);

/* Chaining. A call id of 0 means the call could not be started. */
FAASM_IMPORT(__faasm_chain_name)
unsigned int __faasm_chain_name(const char *name, const unsigned char *input, long inputLen);
FAASM_IMPORT(__faasm_chain_ptr)
unsigned int __faasm_chain_ptr(int (*funcPtr)(), const unsigned char *input, long inputLen);
FAASM_IMPORT(__faasm_await_call)
int __faasm_await_call(unsigned int messageId);
FAASM_IMPORT(__faasm_await_call_output)
int __faasm_await_call_output(unsigned int messageId, char **output, int *outputLen);

/* State: whole values. */
FAASM_IMPORT(__faasm_read_state)
long __faasm_read_state(const char *key, unsigned char *buffer, long bufferLen);
FAASM_IMPORT(__faasm_read_state_ptr)
unsigned char *__faasm_read_state_ptr(const char *key, long totalLen);
FAASM_IMPORT(__faasm_write_state)
void __faasm_write_state(const char *key, const unsigned char *data, long dataLen);

/* State: ranges. */
FAASM_IMPORT(__faasm_write_state_offset)
void __faasm_write_state_offset(const char *key, long totalLen, long offset,
                                const unsigned char *data, long dataLen);
FAASM_IMPORT(__faasm_read_state_offset)
void __faasm_read_state_offset(const char *key, long totalLen, long offset,
                               unsigned char *buffer, long bufferLen);
FAASM_IMPORT(__faasm_read_state_offset_ptr)
unsigned char *__faasm_read_state_offset_ptr(const char *key, long totalLen, long offset, long len);
FAASM_IMPORT(__faasm_flag_state_dirty)
void __faasm_flag_state_dirty(const char *key, long totalLen);
FAASM_IMPORT(__faasm_flag_state_offset_dirty)
void __faasm_flag_state_offset_dirty(const char *key, long totalLen, long offset, long len);

/* State: appends. */
FAASM_IMPORT(__faasm_append_state)
void __faasm_append_state(const char *key, const unsigned char *data, long dataLen);
FAASM_IMPORT(__faasm_read_appended_state)
void __faasm_read_appended_state(const char *key, unsigned char *data, long dataLen, long nElems);
FAASM_IMPORT(__faasm_clear_appended_state)
void __faasm_clear_appended_state(const char *key);

/* State: tiers. */
FAASM_IMPORT(__faasm_push_state)
void __faasm_push_state(const char *key);
FAASM_IMPORT(__faasm_push_state_partial)
void __faasm_push_state_partial(const char *key);
FAASM_IMPORT(__faasm_push_state_partial_mask)
void __faasm_push_state_partial_mask(const char *key, const char *maskKey);
FAASM_IMPORT(__faasm_pull_state)
void __faasm_pull_state(const char *key, long stateLen);

/* State: locks. */
FAASM_IMPORT(__faasm_lock_state_read)
void __faasm_lock_state_read(const char *key);
FAASM_IMPORT(__faasm_unlock_state_read)
void __faasm_unlock_state_read(const char *key);
FAASM_IMPORT(__faasm_lock_state_write)
void __faasm_lock_state_write(const char *key);
FAASM_IMPORT(__faasm_unlock_state_write)
void __faasm_unlock_state_write(const char *key);
FAASM_IMPORT(__faasm_lock_state_global_read)
void __faasm_lock_state_global_read(const char *key);
FAASM_IMPORT(__faasm_unlock_state_global_read)
void __faasm_unlock_state_global_read(const char *key);
FAASM_IMPORT(__faasm_lock_state_global_write)
void __faasm_lock_state_global_write(const char *key);
FAASM_IMPORT(__faasm_unlock_state_global_write)
void __faasm_unlock_state_global_write(const char *key);

/* Other. */
FAASM_IMPORT(__faasm_conf_flag)
unsigned int __faasm_conf_flag(const char *key);

/* ---- Convenience API (Faasm's faasm/core.h) ---- */

typedef int (*FaasmFuncPtr)(void);

/* A function's entry point. */
#define FAASM_MAIN_FUNC() int main(int argc, char *argv[])

long faasmGetInputSize(void);
void faasmGetInput(unsigned char *buffer, long bufferLen);
void faasmSetOutput(const unsigned char *output, long outputLen);

unsigned int faasmChainNamed(const char *name, const unsigned char *input, long inputSize);
unsigned int faasmChain(FaasmFuncPtr funcPtr, const unsigned char *input, long inputSize);
int faasmAwaitCall(unsigned int messageId);
int faasmAwaitCallOutput(unsigned int messageId, char **output, int *outputLen);

long faasmReadStateSize(const char *key);
void faasmReadState(const char *key, unsigned char *buffer, long bufferLen);
unsigned char *faasmReadStatePtr(const char *key, long totalLen);
void faasmReadStateOffset(const char *key, long totalLen, long offset, unsigned char *buffer,
                          long bufferLen);
unsigned char *faasmReadStateOffsetPtr(const char *key, long totalLen, long offset, long len);
void faasmWriteState(const char *key, const unsigned char *data, long dataLen);
void faasmWriteStateOffset(const char *key, long totalLen, long offset, const unsigned char *data,
                           long dataLen);
void faasmFlagStateDirty(const char *key, long totalLen);
void faasmFlagStateOffsetDirty(const char *key, long totalLen, long offset, long len);
void faasmPushState(const char *key);
void faasmPushStatePartial(const char *key);
void faasmPushStatePartialMask(const char *key, const char *maskKey);
void faasmPullState(const char *key, long stateLen);
void faasmLockStateRead(const char *key);
void faasmUnlockStateRead(const char *key);
void faasmLockStateWrite(const char *key);
void faasmUnlockStateWrite(const char *key);
void faasmLockStateGlobalRead(const char *key);
void faasmUnlockStateGlobalRead(const char *key);
void faasmLockStateGlobalWrite(const char *key);
void faasmUnlockStateGlobalWrite(const char *key);
void faasmAppendState(const char *key, const unsigned char *data, long dataLen);
void faasmReadAppendedState(const char *key, unsigned char *buffer, long bufferLen, long nElems);
void faasmClearAppendedState(const char *key);
unsigned int faasmGetConfFlag(const char *key);

#ifdef __cplusplus
}
#endif

#endif /* FAASM_FAASM_H */
