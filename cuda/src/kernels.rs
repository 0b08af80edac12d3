//! Small kernels as PTX for the demo and the test programs, so the same program runs on
//! a real GPU (the driver compiles the PTX) and on the fake driver, which
//! recognises the entry names and runs its built-in versions.

/// A module with `fill_f32`, `scale_f32`, `sum_f32`, `copy`, `struct_copy`, `weight_sum` and
/// `packed_sum`
/// (parameter layouts in tests/fakecuda/src/kernels.rs), NUL-terminated.
pub const MODULE: &str = concat!(
    ".version 7.0\n.target sm_70\n.address_size 64\n\n",
    // p[i] = value
    ".visible .entry fill_f32(.param .u64 fill_p, .param .f32 fill_v, .param .u64 fill_n)\n{\n",
    "  .reg .pred %p<2>;\n  .reg .f32 %f<2>;\n  .reg .b32 %r<5>;\n  .reg .b64 %rd<8>;\n",
    "  ld.param.u64 %rd1, [fill_p];\n  ld.param.f32 %f1, [fill_v];\n  ld.param.u64 %rd2, [fill_n];\n",
    "  mov.u32 %r1, %ctaid.x;\n  mov.u32 %r2, %ntid.x;\n  mov.u32 %r3, %tid.x;\n  mov.u32 %r4, %nctaid.x;\n",
    "  mul.wide.u32 %rd3, %r1, %r2;\n  cvt.u64.u32 %rd4, %r3;\n  add.u64 %rd3, %rd3, %rd4;\n  mul.wide.u32 %rd5, %r4, %r2;\n",
    "FILL_LOOP:\n  setp.ge.u64 %p1, %rd3, %rd2;\n  @%p1 bra FILL_DONE;\n",
    "  shl.b64 %rd6, %rd3, 2;\n  add.u64 %rd7, %rd1, %rd6;\n  st.global.f32 [%rd7], %f1;\n",
    "  add.u64 %rd3, %rd3, %rd5;\n  bra FILL_LOOP;\nFILL_DONE:\n  ret;\n}\n\n",
    // p[i] *= factor
    ".visible .entry scale_f32(.param .u64 scale_p, .param .f32 scale_v, .param .u64 scale_n)\n{\n",
    "  .reg .pred %p<2>;\n  .reg .f32 %f<3>;\n  .reg .b32 %r<5>;\n  .reg .b64 %rd<8>;\n",
    "  ld.param.u64 %rd1, [scale_p];\n  ld.param.f32 %f1, [scale_v];\n  ld.param.u64 %rd2, [scale_n];\n",
    "  mov.u32 %r1, %ctaid.x;\n  mov.u32 %r2, %ntid.x;\n  mov.u32 %r3, %tid.x;\n  mov.u32 %r4, %nctaid.x;\n",
    "  mul.wide.u32 %rd3, %r1, %r2;\n  cvt.u64.u32 %rd4, %r3;\n  add.u64 %rd3, %rd3, %rd4;\n  mul.wide.u32 %rd5, %r4, %r2;\n",
    "SCALE_LOOP:\n  setp.ge.u64 %p1, %rd3, %rd2;\n  @%p1 bra SCALE_DONE;\n",
    "  shl.b64 %rd6, %rd3, 2;\n  add.u64 %rd7, %rd1, %rd6;\n  ld.global.f32 %f2, [%rd7];\n  mul.f32 %f2, %f2, %f1;\n  st.global.f32 [%rd7], %f2;\n",
    "  add.u64 %rd3, %rd3, %rd5;\n  bra SCALE_LOOP;\nSCALE_DONE:\n  ret;\n}\n\n",
    // *out += sum(input[0..n])
    ".visible .entry sum_f32(.param .u64 sum_in, .param .u64 sum_out, .param .u64 sum_n)\n{\n",
    "  .reg .pred %p<2>;\n  .reg .f32 %f<4>;\n  .reg .b32 %r<5>;\n  .reg .b64 %rd<9>;\n",
    "  ld.param.u64 %rd1, [sum_in];\n  ld.param.u64 %rd8, [sum_out];\n  ld.param.u64 %rd2, [sum_n];\n",
    "  mov.u32 %r1, %ctaid.x;\n  mov.u32 %r2, %ntid.x;\n  mov.u32 %r3, %tid.x;\n  mov.u32 %r4, %nctaid.x;\n",
    "  mul.wide.u32 %rd3, %r1, %r2;\n  cvt.u64.u32 %rd4, %r3;\n  add.u64 %rd3, %rd3, %rd4;\n  mul.wide.u32 %rd5, %r4, %r2;\n",
    "  mov.f32 %f1, 0f00000000;\n",
    "SUM_LOOP:\n  setp.ge.u64 %p1, %rd3, %rd2;\n  @%p1 bra SUM_DONE;\n",
    "  shl.b64 %rd6, %rd3, 2;\n  add.u64 %rd7, %rd1, %rd6;\n  ld.global.f32 %f2, [%rd7];\n  add.f32 %f1, %f1, %f2;\n",
    "  add.u64 %rd3, %rd3, %rd5;\n  bra SUM_LOOP;\nSUM_DONE:\n  atom.global.add.f32 %f3, [%rd8], %f1;\n  ret;\n}\n\n",
    // memcpy(dst, src, bytes)
    ".visible .entry copy(.param .u64 copy_dst, .param .u64 copy_src, .param .u64 copy_n)\n{\n",
    "  .reg .pred %p<2>;\n  .reg .b16 %h<2>;\n  .reg .b32 %r<5>;\n  .reg .b64 %rd<9>;\n",
    "  ld.param.u64 %rd1, [copy_dst];\n  ld.param.u64 %rd8, [copy_src];\n  ld.param.u64 %rd2, [copy_n];\n",
    "  mov.u32 %r1, %ctaid.x;\n  mov.u32 %r2, %ntid.x;\n  mov.u32 %r3, %tid.x;\n  mov.u32 %r4, %nctaid.x;\n",
    "  mul.wide.u32 %rd3, %r1, %r2;\n  cvt.u64.u32 %rd4, %r3;\n  add.u64 %rd3, %rd3, %rd4;\n  mul.wide.u32 %rd5, %r4, %r2;\n",
    "COPY_LOOP:\n  setp.ge.u64 %p1, %rd3, %rd2;\n  @%p1 bra COPY_DONE;\n",
    "  add.u64 %rd6, %rd8, %rd3;\n  add.u64 %rd7, %rd1, %rd3;\n  ld.global.u8 %h1, [%rd6];\n  st.global.u8 [%rd7], %h1;\n",
    "  add.u64 %rd3, %rd3, %rd5;\n  bra COPY_LOOP;\nCOPY_DONE:\n  ret;\n}\n\n",
    // dst[i] = src[i], from one struct parameter { src, dst, n }
    ".visible .entry struct_copy(.param .align 8 .b8 sc_args[24])\n{\n",
    "  .reg .pred %p<2>;\n  .reg .f32 %f<2>;\n  .reg .b32 %r<5>;\n  .reg .b64 %rd<10>;\n",
    "  ld.param.u64 %rd8, [sc_args];\n  ld.param.u64 %rd1, [sc_args+8];\n  ld.param.u64 %rd2, [sc_args+16];\n",
    "  mov.u32 %r1, %ctaid.x;\n  mov.u32 %r2, %ntid.x;\n  mov.u32 %r3, %tid.x;\n  mov.u32 %r4, %nctaid.x;\n",
    "  mul.wide.u32 %rd3, %r1, %r2;\n  cvt.u64.u32 %rd4, %r3;\n  add.u64 %rd3, %rd3, %rd4;\n  mul.wide.u32 %rd5, %r4, %r2;\n",
    "SC_LOOP:\n  setp.ge.u64 %p1, %rd3, %rd2;\n  @%p1 bra SC_DONE;\n",
    "  shl.b64 %rd6, %rd3, 2;\n  add.u64 %rd7, %rd8, %rd6;\n  ld.global.f32 %f1, [%rd7];\n  add.u64 %rd9, %rd1, %rd6;\n  st.global.f32 [%rd9], %f1;\n",
    "  add.u64 %rd3, %rd3, %rd5;\n  bra SC_LOOP;\nSC_DONE:\n  ret;\n}\n\n",
    // *out += sum(w[0..n]), taking at least ns nanoseconds: a GEMM-shaped stand-in whose
    // run time is a parameter (the fake driver's timing model reads it).
    ".visible .entry weight_sum(.param .u64 ws_w, .param .u64 ws_n, .param .u64 ws_out, .param .u64 ws_ns)\n{\n",
    "  .reg .pred %p<3>;\n  .reg .f32 %f<4>;\n  .reg .b32 %r<5>;\n  .reg .b64 %rd<12>;\n",
    "  ld.param.u64 %rd1, [ws_w];\n  ld.param.u64 %rd2, [ws_n];\n  ld.param.u64 %rd8, [ws_out];\n  ld.param.u64 %rd9, [ws_ns];\n",
    "  mov.u64 %rd10, %globaltimer;\n  add.u64 %rd10, %rd10, %rd9;\n",
    "  mov.u32 %r1, %ctaid.x;\n  mov.u32 %r2, %ntid.x;\n  mov.u32 %r3, %tid.x;\n  mov.u32 %r4, %nctaid.x;\n",
    "  mul.wide.u32 %rd3, %r1, %r2;\n  cvt.u64.u32 %rd4, %r3;\n  add.u64 %rd3, %rd3, %rd4;\n  mul.wide.u32 %rd5, %r4, %r2;\n",
    "  mov.f32 %f1, 0f00000000;\n",
    "WS_LOOP:\n  setp.ge.u64 %p1, %rd3, %rd2;\n  @%p1 bra WS_DONE;\n",
    "  shl.b64 %rd6, %rd3, 2;\n  add.u64 %rd7, %rd1, %rd6;\n  ld.global.f32 %f2, [%rd7];\n  add.f32 %f1, %f1, %f2;\n",
    "  add.u64 %rd3, %rd3, %rd5;\n  bra WS_LOOP;\nWS_DONE:\n  atom.global.add.f32 %f3, [%rd8], %f1;\n",
    "WS_WAIT:\n  mov.u64 %rd11, %globaltimer;\n  setp.lt.u64 %p2, %rd11, %rd10;\n  @%p2 bra WS_WAIT;\n  ret;\n}\n\n",
    // *out += the sums of n floats through five pointers of one 1720-byte parameter (at
    // offsets 0, 200, 512, 1000, 1712; n at 8, out at 16): cuBLAS passes a GEMM's weight
    // this way, in a packed buffer, several times.
    ".visible .entry packed_sum(.param .align 8 .b8 ps_args[1720])\n{\n",
    "  .reg .pred %p<2>;\n  .reg .f32 %f<4>;\n  .reg .b32 %r<5>;\n  .reg .b64 %rd<20>;\n",
    "  ld.param.u64 %rd10, [ps_args];\n  ld.param.u64 %rd11, [ps_args+200];\n  ld.param.u64 %rd12, [ps_args+512];\n",
    "  ld.param.u64 %rd13, [ps_args+1000];\n  ld.param.u64 %rd14, [ps_args+1712];\n",
    "  ld.param.u64 %rd2, [ps_args+8];\n  ld.param.u64 %rd8, [ps_args+16];\n",
    "  mov.u32 %r1, %ctaid.x;\n  mov.u32 %r2, %ntid.x;\n  mov.u32 %r3, %tid.x;\n  mov.u32 %r4, %nctaid.x;\n",
    "  mul.wide.u32 %rd3, %r1, %r2;\n  cvt.u64.u32 %rd4, %r3;\n  add.u64 %rd3, %rd3, %rd4;\n  mul.wide.u32 %rd5, %r4, %r2;\n",
    "  mov.f32 %f1, 0f00000000;\n",
    "PS_LOOP:\n  setp.ge.u64 %p1, %rd3, %rd2;\n  @%p1 bra PS_DONE;\n  shl.b64 %rd6, %rd3, 2;\n",
    "  add.u64 %rd7, %rd10, %rd6;\n  ld.global.f32 %f2, [%rd7];\n  add.f32 %f1, %f1, %f2;\n",
    "  add.u64 %rd7, %rd11, %rd6;\n  ld.global.f32 %f2, [%rd7];\n  add.f32 %f1, %f1, %f2;\n",
    "  add.u64 %rd7, %rd12, %rd6;\n  ld.global.f32 %f2, [%rd7];\n  add.f32 %f1, %f1, %f2;\n",
    "  add.u64 %rd7, %rd13, %rd6;\n  ld.global.f32 %f2, [%rd7];\n  add.f32 %f1, %f1, %f2;\n",
    "  add.u64 %rd7, %rd14, %rd6;\n  ld.global.f32 %f2, [%rd7];\n  add.f32 %f1, %f1, %f2;\n",
    "  add.u64 %rd3, %rd3, %rd5;\n  bra PS_LOOP;\nPS_DONE:\n  atom.global.add.f32 %f3, [%rd8], %f1;\n  ret;\n}\n\0",
);

/// A module with `tmap_sum` (Hopper's tensor memory accelerator, so sm_90 on):
/// `*out += sum` of the first box (at coordinate 0) of a rank-1 `f32` tensor map, read
/// with `cp.async.bulk.tensor` into shared memory; `n` is the box's element count
/// (at most 256). NUL-terminated.
pub const TENSOR_MAP_MODULE: &str = concat!(
    ".version 8.0\n.target sm_90\n.address_size 64\n\n",
    ".visible .entry tmap_sum(.param .align 64 .b8 tm_map[128], .param .u64 tm_out, .param .u32 tm_n)\n{\n",
    "  .reg .pred %p<3>;\n  .reg .f32 %f<4>;\n  .reg .b32 %r<6>;\n  .reg .b64 %rd<8>;\n",
    "  .shared .align 128 .b8 tm_box[1024];\n  .shared .align 8 .b64 tm_bar;\n",
    "  mov.u32 %r1, %tid.x;\n  setp.ne.u32 %p1, %r1, 0;\n  @%p1 bra TM_DONE;\n",
    "  mov.b64 %rd1, tm_map;\n  cvta.param.u64 %rd2, %rd1;\n",
    "  ld.param.u64 %rd3, [tm_out];\n  ld.param.u32 %r2, [tm_n];\n  shl.b32 %r3, %r2, 2;\n",
    "  mbarrier.init.shared::cta.b64 [tm_bar], 1;\n  fence.proxy.async.shared::cta;\n",
    "  mbarrier.arrive.expect_tx.shared::cta.b64 %rd4, [tm_bar], %r3;\n  mov.u32 %r4, 0;\n",
    "  cp.async.bulk.tensor.1d.shared::cluster.global.mbarrier::complete_tx::bytes [tm_box], [%rd2, {%r4}], [tm_bar];\n",
    "TM_WAIT:\n  mbarrier.try_wait.parity.shared::cta.b64 %p2, [tm_bar], 0;\n  @!%p2 bra TM_WAIT;\n",
    "  mov.f32 %f1, 0f00000000;\n  mov.u64 %rd5, tm_box;\n  mov.u32 %r5, 0;\n",
    "TM_LOOP:\n  setp.ge.u32 %p2, %r5, %r2;\n  @%p2 bra TM_SUM;\n",
    "  mul.wide.u32 %rd6, %r5, 4;\n  add.u64 %rd7, %rd5, %rd6;\n  ld.shared.f32 %f2, [%rd7];\n  add.f32 %f1, %f1, %f2;\n",
    "  add.u32 %r5, %r5, 1;\n  bra TM_LOOP;\n",
    "TM_SUM:\n  atom.global.add.f32 %f3, [%rd3], %f1;\n",
    "TM_DONE:\n  ret;\n}\n\0",
);

/// Every PTX text the repository carries, by name, NUL-terminated: CI assembles each
/// with `ptxas` for every architecture from its `.target` (sm_75 at least) on
/// (scripts/cuda-check).
pub const ALL: &[(&str, &str)] = &[("module", MODULE), ("tensor_map", TENSOR_MAP_MODULE)];
