import random, time, sys
import run
from emu import Bf16, Tf32, ConvGeom, STATS
random.seed(int(sys.argv[1]) if len(sys.argv)>1 else 1)
cases=[
 (2,3,7,9,20,3,3,1,1,1,1,1,1),
 (2,5,9,8,3,4,2,3,2,2,0,1,2),
 (2,12,9,9,20,3,3,2,2,1,1,2,2),
 (2,12,8,9,3,1,1,1,1,0,0,1,1),
 (2,3,5,5,3,4,4,1,1,2,2,1,1),
 (1,20,9,9,5,3,3,1,1,1,1,1,1),   # bwd-weight N = 9*24 = 216 > 128
 (2,5,9,9,20,2,3,3,1,0,2,2,1),
]
while len(cases)<30:
    geo=(random.choice([1,2,3]),random.choice([3,5,12,17]),random.randint(5,9),random.randint(5,9),
         random.choice([3,9,20]),random.randint(1,4),random.randint(1,4),random.randint(1,3),random.randint(1,3),
         random.randint(0,2),random.randint(0,2),random.randint(1,2),random.randint(1,2))
    g=ConvGeom(*geo)
    if g.h_out>0 and g.w_out>0: cases.append(geo)
worst={}
for geo in cases:
    for E in (Bf16,Tf32):
        for tgt in (4,264):
            t0=time.time()
            e=run.run_case(E,geo,target=tgt,seed=hash(geo)%1000)
            for k,v in e.items():
                if k!='splits': worst[k]=max(worst.get(k,0),v)
            print(E.__name__,geo,'target',tgt,{k:(float(v) if k!='splits' else v) for k,v in e.items()},'%.1fs'%(time.time()-t0),flush=True)
print('WORST',worst)
print(STATS)
