# The project's own KVM guest: 16-bit real-mode code, one copy shared by every vCPU.
# The bytes in guest.ts are this file assembled (`as --32`, `objcopy -O binary`); the unit test
# re-assembles it where binutils is installed and compares. Nothing needs an assembler at run time.
#
# Register contract, set by the host on each vCPU before its first run (guest.ts initialState):
#   CS:IP = 0x0100:0000 (this code at GPA 0x1000)    DS = 0 (IVT, VM-wide words)
#   ES    = this vCPU's mailbox (128 B)               FS = this vCPU's pvclock record (32 B)
#   SS:SP = this vCPU's stack (256 B)                 EDI = GPA of the pvclock record | 1 (enable)
#   IVT[0x40] = 0x0100:irq (the doorbell vector)
# (A vCPU started at `idle` instead does nothing but HLT: for timing KVM_RUN itself.)
#
# Mailbox (ES:), written under its own seqlock so the daemon never reads half a sample:
#   0 seq  4 samples  8 tsc (u64)  16..47 the pvclock record as read (version at 16)
#   48 stopped (times this vCPU saw and cleared PVCLOCK_GUEST_STOPPED)
#   52 acted (times this vCPU was the first of the VM to see a new stop)   56 retries
#   60 vCPU index (host-written)   64 irq seq   68 doorbells   72 tsc at the last doorbell (u64)
# VM-wide: DS:0x500 = stops acted on (one per pause, whichever vCPU saw it first).
#
# Per sample: read the record under the pvclock version seqlock (pvclock_read_begin/retry) with an
# RDTSC inside it; if the copy has GUEST_STOPPED, clear the bit in the vCPU's own record, as Linux's
# kvm_check_and_clear_guest_paused() does, so the same stop is counted once; then HLT, which exits
# to the host (no in-kernel irqchip): the host paces the samples and injects the doorbell.
	.code16
	.text
	.org 0
entry:
	mov	%edi, %eax		# MSR_KVM_SYSTEM_TIME_NEW = record GPA | 1
	xor	%edx, %edx
	mov	$0x4b564d01, %ecx
	wrmsr
	sti				# doorbells may arrive from now on
sample:
	incl	%es:0			# mailbox seq odd: sample in progress
retry:
	mov	%fs:0, %ebx		# pvclock version
	test	$1, %bl
	jnz	busy			# odd: the host is rewriting the record
	mov	%fs:8, %eax		# copy tsc_timestamp, system_time, mul, shift, flags, pad
	mov	%eax, %es:24
	mov	%fs:12, %eax
	mov	%eax, %es:28
	mov	%fs:16, %eax
	mov	%eax, %es:32
	mov	%fs:20, %eax
	mov	%eax, %es:36
	mov	%fs:24, %eax
	mov	%eax, %es:40
	mov	%fs:28, %eax
	mov	%eax, %es:44
	rdtsc				# the TSC this record is applied to
	cmp	%fs:0, %ebx
	jne	busy			# version moved: read again
	mov	%ebx, %es:16
	mov	%eax, %es:8
	mov	%edx, %es:12
	testb	$2, %es:45		# PVCLOCK_GUEST_STOPPED in the copy?
	jz	done
	andb	$0xfd, %fs:29		# clear it in the vCPU's record: act once per stop
	incl	%es:48
	mov	%es:48, %ecx		# first vCPU to reach stop n moves the VM-wide count n-1 -> n
	lea	-1(%ecx), %eax
	lock cmpxchg %ecx, %ds:0x500
	jne	done
	incl	%es:52
done:
	incl	%es:4
	incl	%es:0			# mailbox seq even: sample complete
	hlt
	jmp	sample
busy:
	incl	%es:56
	jmp	retry
irq:					# doorbell (vector 0x40): count it and stamp it
	push	%eax
	push	%edx
	incl	%es:64
	rdtsc
	mov	%eax, %es:72
	mov	%edx, %es:76
	incl	%es:68
	incl	%es:64
	pop	%edx
	pop	%eax
	iret
idle:					# one instruction per entry: the bare KVM_RUN round trip
	hlt
	jmp	idle
