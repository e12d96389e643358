//! XDP program loader. 
