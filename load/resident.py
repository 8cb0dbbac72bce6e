#!/usr/bin/env python3
"""Which crates' code of a running process is resident, from
/proc/PID/pagemap against the binary's symbols (`nm -S -C`; the binary
must keep its symbols: a release build, not the stripped image one).

    python3 load/resident.py PID BINARY

Prints the resident pages of the binary's executable mapping and, per
crate (the first path segment of each symbol), the KiB resident of the
KiB it has. Run as root (pagemap's present bit). README, "Pods deleted by
someone else, a write budget tried, the binary's code", has what it
showed.
"""
import collections, os, re, struct, subprocess, sys
pid=int(sys.argv[1]); binpath=os.path.realpath(sys.argv[2])
maps=[l for l in open(f'/proc/{pid}/maps') if binpath in l]
# load base: mapping with offset 0
base=None; text=None
for l in maps:
    a,perm,off=l.split()[:3]
    lo,hi=[int(x,16) for x in a.split('-')]
    off=int(off,16)
    if off==0: base=lo
    if 'x' in perm: text=(lo,hi)
if base is None or text is None:
    sys.exit(f'resident: {binpath} is not mapped by process {pid}')
pm=open(f'/proc/{pid}/pagemap','rb')
res=set()
lo,hi=text
for va in range(lo,hi,4096):
    pm.seek(va//4096*8); e=struct.unpack('Q',pm.read(8))[0]
    if e>>63: res.add(va-base)
syms=[]
for l in subprocess.run(['nm','-S','-C',binpath],capture_output=True,text=True).stdout.splitlines():
    p=l.split(None,3)
    if len(p)<4 or p[2] not in 'tTwW': continue
    syms.append((int(p[0],16),int(p[1],16),p[3]))
syms.sort()
c=collections.Counter(); tot=collections.Counter()
def crate(n):
    n=n.lstrip('<&')
    m=re.match(r'(?:dyn )?([A-Za-z_][A-Za-z0-9_]*)',n)
    return m.group(1) if m else '?'
for a,s,n in syms:
    k=crate(n)
    tot[k]+=s
    pages=set(range(a//4096, (a+s-1)//4096+1))
    r=sum(1 for p in pages if p*4096 in res)
    c[k]+= s*r/len(pages) if pages else 0
print('resident text pages', len(res)*4, 'KiB of', (hi-lo)//1024)
for k,v in c.most_common(25):
    print(f'{v/1024:8.0f} KiB resident of {tot[k]/1024:8.0f}  {k}')
